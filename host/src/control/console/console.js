// The pitstop console's entry module: plain JavaScript modules that the
// browser loads itself, no dependencies, no build step. It names the
// sections a redraw draws, signs the operator out when the token is
// refused, wires the page's forms and buttons, and starts polling.
//
// Everything the console shows comes from the token-protected admin API
// and from /metrics, polled every 2 s (poll.js). Data is only ever put into
// the page as text (dom.js), never parsed as markup: component names and
// dead letters' payloads are other people's input.
import { token, whenRefused } from './client.js';
import { renderComponents } from './components.js';
import { deploy } from './deploy.js';
import { askToUndeploy, keepDeployed, renderDetail, rollback, undeploy } from './detail.js';
import { $ } from './dom.js';
import { renderEvents } from './events.js';
import { renderBanner, renderHealth } from './health.js';
import { show, signIn, signOut } from './pages.js';
import { startPolling } from './poll.js';
import { drawing } from './render.js';
import { renderTraffic } from './traffic.js';
import { renderUndeployed } from './undeployed.js';

drawing(renderBanner, renderComponents, renderUndeployed, renderDetail, renderTraffic, renderEvents, renderHealth);
whenRefused(signOut);

document.addEventListener('DOMContentLoaded', () => {
  $('sign-in').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => signOut('Signed out.'));
  $('deploy').addEventListener('submit', deploy);
  $('rollback').addEventListener('click', rollback);
  $('undeploy').addEventListener('click', askToUndeploy);
  $('undeploy-no').addEventListener('click', keepDeployed);
  $('undeploy-yes').addEventListener('click', undeploy);
  document.querySelector('.skip').addEventListener('click', (event) => {
    event.preventDefault(); // the hash names pages: stay on this one
    $('main').focus();
  });
  window.addEventListener('hashchange', () => show(location.hash.slice(1), true));
  show(location.hash.slice(1), false);
  if (token()) startPolling();
});
