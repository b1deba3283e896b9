// The wire format of docs/protocol.md: subject names and JSON bodies.

export const PROTOCOL_VERSION = 1;

/** Every subject name, derived from one namespace (see `Subjects` in protocol.py). */
export function subjects(namespace = "autellix") {
  const root = `${namespace}.v${PROTOCOL_VERSION}`;
  return {
    submit: `${root}.call.submit`,
    resume: `${root}.call.resume`,
    programOpen: `${root}.program.open`,
    programClose: `${root}.program.close`,
    programCancel: `${root}.program.cancel`,
  };
}

/** True for NATS's "no responders" status (nobody subscribed to the request's subject). */
export function noResponders(msg) {
  return Boolean(msg.headers && msg.headers.code === 503);
}

/** A reply's JSON body, or null for a "no responders" status. */
export function decode(msg) {
  if (noResponders(msg)) return null;
  return JSON.parse(new TextDecoder().decode(msg.data));
}

export function encode(obj) {
  return new TextEncoder().encode(JSON.stringify(obj));
}
