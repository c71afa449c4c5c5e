// A pitstop service in JavaScript: the `service` world of wit/platform.wit.
// componentize-js maps each WIT import to an ES module named after the
// interface and takes each export (here the `handler` interface) from this
// module's exports. Records are plain objects, list<u8> is a Uint8Array, and
// a result's error arrives as a thrown error whose `payload` is the variant.
import { increment, get } from 'pitstop:platform/keyvalue@0.1.0';
import { log } from 'pitstop:platform/log@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function text(status, body) {
  return {
    status,
    headers: [{ name: 'content-type', value: 'text/plain; charset=utf-8' }],
    body: encoder.encode(body),
  };
}

function count(method) {
  try {
    if (method === 'POST') {
      // Atomic, in this component's own keyspace; s64 is a BigInt.
      const value = increment('count', 1n);
      log('info', `count is now ${value}`);
      return text(200, `${value}\n`);
    }
    if (method === 'GET') {
      const stored = get('count');
      return text(200, `${stored === undefined ? 0 : decoder.decode(stored)}\n`);
    }
    return text(405, 'method not allowed\n');
  } catch (e) {
    const why = e.payload ? `${e.payload.tag}: ${e.payload.val}` : String(e);
    return text(500, `keyvalue failed: ${why}\n`);
  }
}

export const handler = {
  // The gateway hands over the full path, route prefix included
  // (/js/hello): match what follows the prefix, so the service answers
  // under whichever prefix it is routed at.
  handle(request) {
    const { method, path } = request;
    const rest = path.split('/').slice(2).join('/');
    if (rest === 'hello') {
      return method === 'GET' ? text(200, 'hello from js') : text(405, 'method not allowed\n');
    }
    if (rest === 'count') {
      return count(method);
    }
    return text(404, 'not found\n');
  },
};
