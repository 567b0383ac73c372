// Preload (`node --import ./loopback.mjs server.js`): a server that listens on a port without
// naming a host listens on 127.0.0.1 only. Reference servers such as server-everything bind every
// interface (`app.listen(PORT)`); under this preload the same unchanged code stays on loopback.
import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  const port = args[0];
  const isPort = typeof port === 'number' || (typeof port === 'string' && /^\d+$/.test(port));
  if (isPort && typeof args[1] !== 'string') {
    args.splice(1, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
