// A real OAuth 2.0 authorization server (npm oidc-provider) on 127.0.0.1, for the interop tests.
//
// The first line of stdin is the configuration, as JSON:
//   {"resources": ["http://127.0.0.1:8080/mcp", ...],           RFC 8707 resource indicators it serves
//    "scopes": ["tools:read", ...],                              scopes any of them may carry
//    "clients": [{"client_id": "...", "client_secret": "...", "scope": "tools:read ...",
//                 "token_endpoint_auth_method": "client_secret_basic"}],   the method is optional
//    "access_token_ttl": 600}                                    optional, seconds
// It listens on a free loopback port and prints one line, {"issuer": "http://127.0.0.1:PORT"}, once it
// answers. It stops on SIGTERM/SIGINT, or when its stdin closes (the test process went away).
//
// client_credentials with `resource=` one of `resources` yields an RFC 9068 JWT access token
// (`typ: at+jwt`, ES256, `aud` = that resource); an unknown resource is refused (invalid_target).
// Discovery: /.well-known/oauth-authorization-server and /.well-known/openid-configuration.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';

import Provider, { errors } from 'oidc-provider';

function readConfig() {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: process.stdin });
    lines.once('line', (line) => {
      try {
        resolve(JSON.parse(line));
      } catch (error) {
        reject(error);
      }
    });
    process.stdin.once('end', () => process.exit(0));
  });
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), kid: `as-${randomBytes(4).toString('hex')}`, alg: 'ES256', use: 'sig' };
}

function providerFor(issuer, config) {
  const resources = new Set(config.resources ?? []);
  const scopes = config.scopes ?? [];
  const ttl = config.access_token_ttl ?? 600;
  return new Provider(issuer, {
    clients: (config.clients ?? []).map((client) => ({
      client_id: client.client_id,
      client_secret: client.client_secret,
      scope: client.scope ?? scopes.join(' '),
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: client.token_endpoint_auth_method ?? 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    })),
    scopes,
    jwks: { keys: [signingKey()] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => {
          if (!resources.has(resource)) {
            throw new errors.InvalidTarget(`unknown resource ${resource}`);
          }
          return {
            scope: scopes.join(' '),
            audience: resource,
            accessTokenTTL: ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        },
      },
    },
  });
}

const config = await readConfig();
const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = providerFor(issuer, config);
  provider.on('server_error', (_ctx, error) => console.error('server_error', error));
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
