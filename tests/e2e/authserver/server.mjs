// The OAuth2 authorization server of the end-to-end tests: oidc-provider
// (from npm, pinned in package-lock.json) on loopback, issuing JWT access
// tokens signed RS256 with a key made at start. The public key is written
// where Dovecot's oauth2 passdb looks it up for local validation
// (<keys_dir>/default/RS256/<kid>), so Dovecot trusts exactly this server.
//
// Usage: node server.mjs CONFIG.json; prints "listening PORT" when ready.
// CONFIG: {"port": 0, "keys_dir": "...", "access_token_ttl": 300,
//          "clients": [{"client_id": "...", "client_secret": "..."}]}
//
// The interaction (login and consent) is a bare form that takes any login
// name: the tests play the user with it after the device grant's code entry.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { URLSearchParams } from 'node:url';

import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const RESOURCE = 'urn:popgate:imap';

const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const kid = `k${crypto.randomBytes(6).toString('hex')}`;
const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
const keyDir = path.join(config.keys_dir, 'default', 'RS256');
fs.mkdirSync(keyDir, { recursive: true });
fs.writeFileSync(path.join(keyDir, kid), publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644 });

const server = http.createServer();
await new Promise((resolve) => server.listen(config.port || 0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: [
      'refresh_token',
      'urn:ietf:params:oauth:grant-type:device_code',
      'client_credentials',
    ],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: c.auth_method || 'client_secret_post',
  })),
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
  scopes: ['openid', 'offline_access', 'imap'],
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'imap',
        audience: RESOURCE,
        accessTokenTTL: config.access_token_ttl || 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // Every device grant gets a refresh token, and every refresh rotates it:
  // what Microsoft's and Google's token endpoints do.
  // Dovecot 2.3 takes only `typ: JWT` (RFC 9068 says `at+jwt`).
  formats: {
    customizers: {
      jwt(ctx, token, parts) {
        parts.header = { ...parts.header, typ: 'JWT' };
        return parts;
      },
    },
  },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id }; } };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
  },
});

// What the tests need to see or do as the server's administrator: every
// token issued (to search logs and stores for them) and the revocation of
// a user's grants (as an admin or the user revoking the app's access).
const issued = [];
const grantsOf = new Map();
provider.on('refresh_token.saved', (token) => {
  issued.push({ kind: 'refresh_token', account: token.accountId || null, value: token.jti });
});
// Every token the token endpoint hands out, as sent (JWTs included).
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.body && typeof ctx.body === 'object') {
    const account = ctx.oidc?.entities?.Grant?.accountId || null;
    for (const kind of ['access_token', 'refresh_token']) {
      if (ctx.body[kind]) issued.push({ kind, account, value: ctx.body[kind] });
    }
  }
});

async function admin(req, res) {
  const url = new URL(req.url, issuer);
  const login = url.searchParams.get('login');
  if (url.pathname === '/admin/issued') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(issued.filter((t) => !login || t.account === login)));
    return;
  }
  if (url.pathname === '/admin/revoke' && req.method === 'POST') {
    let n = 0;
    for (const id of grantsOf.get(login) || []) {
      const grant = await provider.Grant.find(id);
      if (grant) {
        await grant.destroy();
        n += 1;
      }
    }
    grantsOf.delete(login);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ revoked: n }));
    return;
  }
  res.writeHead(404);
  res.end();
}

function page(res, status, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!DOCTYPE html><html><body>${body}</body></html>`);
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(new URLSearchParams(data)));
    req.on('error', reject);
  });
}

// Login and consent in one step: the login name becomes the token's `sub`.
async function interaction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    if (req.method === 'GET') {
      page(res, 200, `<form method="post" action="/interaction/${details.uid}">`
        + '<input name="login"><button type="submit">Sign in</button></form>');
      return;
    }
    const form = await readForm(req);
    const accountId = form.get('login');
    if (!accountId) {
      page(res, 400, 'login required');
      return;
    }
    const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
    grant.addOIDCScope('openid offline_access imap');
    grant.addResourceScope(RESOURCE, 'imap');
    const grantId = await grant.save();
    grantsOf.set(accountId, [...(grantsOf.get(accountId) || []), grantId]);
    await provider.interactionFinished(req, res, {
      login: { accountId },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  } catch (e) {
    page(res, 400, `interaction failed: ${e.message}`);
  }
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res);
  } else if (req.url.startsWith('/admin/')) {
    admin(req, res).catch((e) => { res.writeHead(500); res.end(String(e.message)); });
  } else {
    callback(req, res);
  }
});
process.stdout.write(`listening ${port}\n`);
