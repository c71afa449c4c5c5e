// A wasi:http/proxy component in JavaScript: the standard world that
// `wasmtime serve`, Spin and pitstop run. StarlingMonkey (the engine inside
// componentize-js) implements wasi:http/incoming-handler and hands each
// request to this fetch-event listener as a web Request; nothing here is
// pitstop-specific.
addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  event.respondWith(
    new Response('hello from wasi:http', {
      status: 200,
      headers: { 'content-type': 'text/plain; charset=utf-8', 'x-path': url.pathname },
    }),
  );
});
