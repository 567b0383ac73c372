// A real OAuth 2.0 authorization server (npm oidc-provider) on 127.0.0.1, for the interop tests.
//
// The first line of stdin is the configuration, as JSON:
//   {"resources": ["http://127.0.0.1:8080/mcp", ...],           RFC 8707 resource indicators it serves
//    "scopes": ["tools:read", ...],                              scopes any of them may carry
//    "clients": [{"client_id": "...", "client_secret": "...", "scope": "tools:read ...",
//                 "token_endpoint_auth_method": "client_secret_basic",   optional (or private_key_jwt,
//                 "jwks": {"keys": [public JWK]},                          with the client's public keys)
//                 "exchange_widen_scope": false,    token exchange grants every scope, not what was asked
//                 "exchange_hide_scope": false}],   token exchange answers without `scope`
//    "access_token_ttl": 600,                                    optional, seconds
//    "exchange_token_ttl": 600}                                  optional, seconds (exchanged tokens)
// It listens on a free loopback port and prints one line, {"issuer": "http://127.0.0.1:PORT"}, once it
// answers. It stops on SIGTERM/SIGINT, or when its stdin closes (the test process went away).
//
// client_credentials with `resource=` one of `resources` yields an RFC 9068 JWT access token
// (`typ: at+jwt`, ES256, `aud` = that resource); an unknown resource is refused (invalid_target).
// Discovery: /.well-known/oauth-authorization-server and /.well-known/openid-configuration.
//
// RFC 8693 token exchange (grant_type urn:ietf:params:oauth:grant-type:token-exchange), for any client:
// `subject_token` must be an access token this server issued (ES256 at+jwt, its issuer, unexpired) with
// subject_token_type ...:access_token; `resource` (else `audience`) must be one of `resources`. The answer is
// an RFC 9068 JWT for that resource with the subject token's `sub`, `client_id` = the requesting client, `act`
// = {sub: requesting client} (the subject token's own `act` nested inside), and the requested scope (each
// one of `scopes`). Each exchange prints a line to stdout, {"token_exchange": {client_id, resource, scope,
// jti}}: never a token.
import {
  createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, verify,
} from 'node:crypto';
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

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const EXCHANGE_PARAMS = ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource',
  'scope', 'actor_token', 'actor_token_type'];

// The claims of an access token this server issued (ES256 at+jwt, its issuer, not expired), or null.
function verifiedAccessToken(token, publicKey, issuer) {
  try {
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    const header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    if (header.alg !== 'ES256' || header.typ !== 'at+jwt') return null;
    const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
    const signature = Buffer.from(parts[2], 'base64url');
    if (!verify('sha256', signed, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)) return null;
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
    if (claims.iss !== issuer || typeof claims.exp !== 'number' || claims.exp <= Date.now() / 1000) return null;
    return claims;
  } catch {
    return null;
  }
}

// The RFC 8693 grant handler (see the header of this file).
function tokenExchange(provider, config, publicKey, extraClaims) {
  const resources = new Set(config.resources ?? []);
  const scopes = config.scopes ?? [];
  const ttl = config.exchange_token_ttl ?? config.access_token_ttl ?? 600;
  const settings = new Map((config.clients ?? []).map((client) => [client.client_id, client]));
  return async function handler(ctx) {
    const { params, client } = ctx.oidc;
    const options = settings.get(client.clientId) ?? {};
    if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest(`subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
    }
    if (params.requested_token_type && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest(`requested_token_type must be ${ACCESS_TOKEN_TYPE}`);
    }
    const subject = params.subject_token ? verifiedAccessToken(params.subject_token, publicKey, provider.issuer) : null;
    if (!subject) {
      throw new errors.InvalidGrant('subject_token is not a valid access token of this server');
    }
    const target = params.resource ?? params.audience;
    if (typeof target !== 'string' || !resources.has(target)) {
      throw new errors.InvalidTarget('resource (or audience) must name one known resource');
    }
    const asked = params.scope ? params.scope.split(' ') : [];
    if (asked.some((scope) => !scopes.includes(scope))) {
      throw new errors.InvalidScope('unknown scope requested');
    }
    const granted = options.exchange_widen_scope ? scopes : asked;
    const token = new provider.AccessToken({
      accountId: subject.sub, client, scope: granted.join(' ') || undefined, gty: 'token_exchange',
    });
    token.resourceServer = new provider.ResourceServer(target, {
      scope: scopes.join(' '), audience: target, accessTokenTTL: ttl, accessTokenFormat: 'jwt',
      jwt: { sign: { alg: 'ES256' } },
    });
    extraClaims.set(token, { act: subject.act ? { sub: client.clientId, act: subject.act } : { sub: client.clientId } });
    const value = await token.save();
    process.stdout.write(`${JSON.stringify({
      token_exchange: {
        client_id: client.clientId, resource: target, scope: token.scope ?? '', jti: token.jti,
      },
    })}\n`);
    ctx.body = {
      access_token: value,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: token.expiration,
      ...(options.exchange_hide_scope || !token.scope ? {} : { scope: token.scope }),
    };
  };
}

function providerFor(issuer, config, key, extraClaims) {
  const resources = new Set(config.resources ?? []);
  const scopes = config.scopes ?? [];
  const ttl = config.access_token_ttl ?? 600;
  return new Provider(issuer, {
    clients: (config.clients ?? []).map((client) => ({
      client_id: client.client_id,
      client_secret: client.client_secret,
      scope: client.scope ?? scopes.join(' '),
      grant_types: ['client_credentials', TOKEN_EXCHANGE],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: client.token_endpoint_auth_method ?? 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
      ...(client.jwks ? { jwks: client.jwks } : {}),
    })),
    scopes,
    jwks: { keys: [key] },
    extraTokenClaims: (_ctx, token) => extraClaims.get(token),
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
  const key = signingKey();
  const extraClaims = new WeakMap(); // access token -> claims it carries beyond oidc-provider's own
  const provider = providerFor(issuer, config, key, extraClaims);
  const publicKey = createPublicKey(createPrivateKey({ key, format: 'jwk' }));
  provider.registerGrantType(TOKEN_EXCHANGE, tokenExchange(provider, config, publicKey, extraClaims), EXCHANGE_PARAMS);
  provider.on('server_error', (_ctx, error) => console.error('server_error', error));
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
