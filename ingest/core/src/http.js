// The one HTTP exchange a build makes: an HTTP/1.1 POST over node:net (node:tls for https),
// `Connection: close`, and its answer read off the socket. Not node:http: its client is a
// large piece of code that a fresh process compiles on first use, about 15 ms of the
// build's wall time on every build (docs/benchmarks.md) for one request; not the global
// fetch either (undici: about 40 ms and 30 MiB to load).
//
// The connection is opened when a build starts (preconnect), so the request at its end goes
// out on a connection that is there already (for https the TLS handshake is done). A
// pre-opened connection that the server closed meanwhile (its idle timeout, a long build)
// is replaced by a new one.
//
// What is read: the status line and headers (1xx interim answers skipped), then the body by
// `Content-Length`, by `Transfer-Encoding: chunked`, or up to the end of the connection.
// TLS verifies the server's certificate as node:https does (the same defaults,
// NODE_EXTRA_CA_CERTS included).

/** Pre-opened connections, by origin: at most one each, taken by the next request there. */
const warm = new Map();

/** Host name for connecting (IPv6 without its brackets). */
const hostOf = (u) => u.hostname.replace(/^\[|\]$/g, '');
const portOf = (u) => Number(u.port) || (u.protocol === 'https:' ? 443 : 80);

/** Opens a connection to `u` (a URL): TCP, or TLS for https. Its errors reach whoever listens next. */
async function connect(u) {
  const host = hostOf(u);
  let socket;
  if (u.protocol === 'https:') {
    const [tls, { isIP }] = await Promise.all([import('node:tls'), import('node:net')]);
    socket = tls.connect({ host, port: portOf(u), servername: isIP(host) ? undefined : host, ALPNProtocols: ['http/1.1'] });
  } else {
    const net = await import('node:net');
    socket = net.connect({ host, port: portOf(u) });
  }
  // Never an unhandled 'error' (it would end the build's process); exchange() reads them.
  socket.on('error', () => {});
  return socket;
}

/**
 * Opens a connection to the server at `url` for the next request there (a build calls it
 * when it starts). Never throws; the connection does not keep the process alive.
 */
export function preconnect(url) {
  let u;
  try {
    u = new URL(String(url).trim());
  } catch {
    return;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return;
  const w = warm.get(u.origin);
  if (w && (w.opening || isOpen(w.socket))) return; // one is there already (a watch-mode rebuild)
  const entry = { opening: true, socket: null, closed: null };
  warm.set(u.origin, entry);
  connect(u)
    .then((socket) => {
      entry.opening = false;
      entry.socket = socket; // a refused or dropped pre-connection only means a new one later
      // Nothing comes before the request: read, so that a close by the server is seen.
      entry.closed = () => socket.destroy();
      socket.once('end', entry.closed);
      socket.resume();
      socket.unref();
    })
    .catch(() => {
      if (warm.get(u.origin) === entry) warm.delete(u.origin);
    });
}

const isOpen = (socket) => !!socket && !socket.destroyed && !socket.readableEnded && !socket.writableEnded;

/** The pre-opened connection to `u`'s origin when it is still open (then it is no longer warm). */
function takeWarm(u) {
  const w = warm.get(u.origin);
  if (!w || w.opening) return null;
  warm.delete(u.origin);
  if (!isOpen(w.socket)) {
    w.socket?.destroy();
    return null;
  }
  w.socket.removeListener('end', w.closed);
  w.socket.removeAllListeners('data');
  w.socket.pause();
  w.socket.ref();
  return w.socket;
}

/**
 * One POST of `body` to `u` (a URL), answered within `timeoutMs`: on the pre-opened
 * connection when there is one, else on a new one; once more on a new one when the
 * pre-opened connection breaks before any answer (the server deduplicates a repeat).
 * @returns {Promise<{status: number, answer: string} | {error: string, timedOut?: boolean}>}
 */
export async function post(u, headers, body, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  const socket = takeWarm(u);
  if (socket) {
    const r = await exchange(socket, u, headers, body, timeoutMs);
    if (!('broken' in r) || !r.broken || deadline - Date.now() <= 0) return r;
  }
  let fresh;
  try {
    fresh = await connect(u);
  } catch (e) {
    return { error: /** @type {any} */ (e)?.code || String(e?.message || e) };
  }
  return exchange(fresh, u, headers, body, Math.max(1, deadline - Date.now()));
}

/** Writes the request on `socket` and reads the answer. */
function exchange(socket, u, headers, body, timeoutMs) {
  return new Promise((done) => {
    const chunks = [];
    let size = 0;
    let settled = false;
    const finish = (r) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeAllListeners('data');
      socket.destroy();
      done(r);
    };
    const timer = setTimeout(() => finish({ error: 'timeout', timedOut: true }), Math.max(1, Math.floor(timeoutMs)));
    const check = (ended) => {
      let r;
      try {
        r = parseAnswer(Buffer.concat(chunks, size), ended);
      } catch (e) {
        finish({ error: `bad HTTP answer (${e.message})` });
        return;
      }
      if (r) finish(r);
      else if (ended) finish({ error: size ? 'the answer was cut short' : 'connection closed without an answer', broken: size === 0 });
    };
    socket.on('data', (c) => {
      chunks.push(c);
      size += c.length;
      check(false);
    });
    socket.on('end', () => check(true));
    socket.on('close', () => check(true));
    socket.on('error', (e) => finish({ error: /** @type {any} */ (e).code || e.message || 'connection error', broken: size === 0 }));
    const target = `${u.pathname || '/'}${u.search || ''}`;
    const host = portOf(u) === (u.protocol === 'https:' ? 443 : 80) ? u.hostname : `${u.hostname}:${portOf(u)}`;
    let head = `POST ${target} HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`;
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${String(v).replace(/[\r\n]/g, '')}\r\n`;
    socket.resume();
    // write, not end: many servers (hyper, node:http) drop a request whose connection the
    // client half-closes before the answer. The socket is destroyed once the answer is read.
    socket.write(`${head}\r\n${body}`);
  });
}

const CRLF2 = Buffer.from('\r\n\r\n');

/**
 * The answer in `buf` when it is whole ({status, answer}), else null; throws on a
 * malformed one. `ended`: the connection is closed (a body without length ends there).
 * @param {Buffer} buf
 * @param {boolean} ended
 */
export function parseAnswer(buf, ended) {
  let start = 0;
  for (;;) {
    const end = buf.indexOf(CRLF2, start);
    if (end < 0) {
      if (buf.length - start > 64 << 10) throw new Error('head over 64 KiB');
      return null;
    }
    const lines = buf.toString('latin1', start, end).split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (!m) throw new Error(`status line ${JSON.stringify(lines[0].slice(0, 40))}`);
    const status = Number(m[1]);
    const fields = new Map();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon > 0) fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    const bodyAt = end + 4;
    if (status >= 100 && status < 200) {
      start = bodyAt; // an interim answer (100 Continue, 103 Early Hints): the real one follows
      continue;
    }
    if (status === 204 || status === 304) return { status, answer: '' };
    if (/\bchunked\b/i.test(fields.get('transfer-encoding') || '')) {
      const parts = [];
      let pos = bodyAt;
      for (;;) {
        const eol = buf.indexOf('\r\n', pos);
        if (eol < 0) return null;
        const n = parseInt(buf.toString('latin1', pos, eol).split(';')[0].trim(), 16);
        if (!Number.isFinite(n) || n < 0) throw new Error('chunk size');
        if (n === 0) {
          // Trailers (usually none) end with an empty line.
          if (buf.length >= eol + 4 && buf[eol + 2] === 13 && buf[eol + 3] === 10) break;
          if (buf.indexOf(CRLF2, eol) >= 0 || ended) break;
          return null;
        }
        if (buf.length < eol + 2 + n + 2) return null;
        parts.push(buf.subarray(eol + 2, eol + 2 + n));
        pos = eol + 2 + n + 2;
      }
      return { status, answer: Buffer.concat(parts).toString('utf8') };
    }
    const length = fields.has('content-length') ? Number(fields.get('content-length')) : null;
    if (length !== null) {
      if (!Number.isInteger(length) || length < 0) throw new Error('content-length');
      if (buf.length - bodyAt < length) return null;
      return { status, answer: buf.toString('utf8', bodyAt, bodyAt + length) };
    }
    return ended ? { status, answer: buf.toString('utf8', bodyAt) } : null;
  }
}
