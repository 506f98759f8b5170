// Self-test of client.mjs (run: `node --test` in this folder).
//
// 1. Pins voprf-ts itself to RFC 9497 Appendix A.1.2 (VOPRF, ristretto255-SHA512)
//    using the raw wire encodings client.mjs sends and expects, and records how
//    voprf-ts's own serialize() framing differs from them.
// 2. Starts an in-process mock of Pavilion's OPRF HTTP API backed by voprf-ts's
//    VOPRFServer (RFC test key), verifying the signed headers with node:crypto
//    Ed25519, and runs client.mjs against it as a child process: outputs must
//    equal VOPRFServer.evaluate() (non-oblivious) and the RFC output vector.
// 3. Negative cases: tampered proof, server evaluating under another key,
//    wrong signing seed (HTTP 401), pinned key mismatch — all exit non-zero.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, createPublicKey, verify } from 'node:crypto';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { ed25519 } from '@noble/curves/ed25519';
import {
    DLEQProof,
    Evaluation,
    EvaluationRequest,
    Oprf,
    VOPRFClient,
    VOPRFServer,
    deriveKeyPair,
    generatePublicKey
} from '@cloudflare/voprf-ts';
import { CryptoNoble } from '@cloudflare/voprf-ts/crypto-noble';

const HERE = dirname(fileURLToPath(import.meta.url));
const CLIENT = join(HERE, 'client.mjs');
const SUITE = Oprf.Suite.RISTRETTO255_SHA512;
const group = Oprf.getGroup(SUITE, CryptoNoble);
const hex = (u8) => Buffer.from(u8).toString('hex');
const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'));
const b64 = (u8) => Buffer.from(u8).toString('base64');

// RFC 9497 A.1.2: VOPRF(ristretto255, SHA-512).
const RFC = {
    seed: 'a3'.repeat(32),
    keyInfo: '74657374206b6579', // "test key"
    skSm: 'e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909',
    pkSm: 'c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e',
    vectors: [
        {
            name: 'A.1.2.1 batch 1',
            inputs: ['00'],
            blinds: ['64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706'],
            blinded: ['863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945'],
            evaluated: ['aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e'],
            proof:
                'ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd06' +
                '6d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d',
            proofRandomScalar: '222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e',
            outputs: [
                'b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d' +
                    'a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c'
            ]
        },
        {
            name: 'A.1.2.2 batch 1',
            inputs: ['5a'.repeat(17)],
            blinds: ['64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706'],
            blinded: ['cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c'],
            evaluated: ['60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468'],
            proof:
                '401a0da6264f8cf45bb2f5264bc31e109155600babb3cd4e5af7d181a2c9dc0a' +
                '67154fabf031fd936051dec80b0b6ae29c9503493dde7393b722eafdf5a50b02',
            proofRandomScalar: '222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e',
            outputs: [
                '8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60' +
                    '356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6'
            ]
        },
        {
            name: 'A.1.2.3 batch 2',
            inputs: ['00', '5a'.repeat(17)],
            blinds: [
                '64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706',
                '222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e'
            ],
            blinded: [
                '863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945',
                '90a0145ea9da29254c3a56be4fe185465ebb3bf2a1801f7124bbbadac751e654'
            ],
            evaluated: [
                'aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e',
                'cc5ac221950a49ceaa73c8db41b82c20372a4c8d63e5dded2db920b7eee36a2a'
            ],
            proof:
                'cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a' +
                '5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08',
            proofRandomScalar: '419c4f4f5052c53c45f3da494d2b67b220d02118e0857cdbcf037f9ea84bbe0c',
            outputs: [
                'b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d' +
                    'a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c',
                '8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60' +
                    '356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6'
            ]
        }
    ]
};
// Input of A.1.2.2 (0x5a * 17) is the UTF-8 string "ZZZZZZZZZZZZZZZZZ", so it
// can go through the CLI; its RFC output pins the end-to-end result too.
const RFC_INPUT_Z17 = 'Z'.repeat(17);
const RFC_OUTPUT_Z17 = RFC.vectors[1].outputs[0];

async function rfcKeyPair() {
    return deriveKeyPair(Oprf.Mode.VOPRF, SUITE, unhex(RFC.seed), unhex(RFC.keyInfo), CryptoNoble);
}

describe('voprf-ts matches RFC 9497 A.1.2 in the raw wire encodings', () => {
    test('DeriveKeyPair', async () => {
        const { privateKey, publicKey } = await rfcKeyPair();
        assert.equal(hex(privateKey), RFC.skSm);
        assert.equal(hex(publicKey), RFC.pkSm);
    });

    for (const v of RFC.vectors) {
        test(v.name, async () => {
            const { privateKey, publicKey } = await rfcKeyPair();
            const client = new VOPRFClient(SUITE, publicKey, CryptoNoble);
            const blinds = v.blinds.map((s) => group.desScalar(unhex(s)));
            client.randomBlinder = async () => blinds.shift(); // fixed blinds
            const server = new VOPRFServer(SUITE, privateKey, CryptoNoble);
            const r = group.desScalar(unhex(v.proofRandomScalar));
            server.prover.randomScalar = async () => r; // fixed proof nonce

            const inputs = v.inputs.map(unhex);
            const [finData, evalReq] = await client.blind(inputs);
            assert.deepEqual(evalReq.blinded.map((e) => hex(e.serialize())), v.blinded);

            // Server side, fed only raw element bytes (as the HTTP mock does).
            const req = new EvaluationRequest(v.blinded.map((h) => group.desElt(unhex(h))));
            const ev = await server.blindEvaluate(req);
            assert.deepEqual(ev.evaluated.map((e) => hex(e.serialize())), v.evaluated);
            assert.equal(hex(ev.proof.serialize()), v.proof, 'proof = c || s, 32-byte LE scalars');

            // Client side, rebuilt from the raw RFC bytes only.
            const rebuilt = new Evaluation(
                Oprf.Mode.VOPRF,
                v.evaluated.map((h) => group.desElt(unhex(h))),
                DLEQProof.deserialize(group.id, unhex(v.proof), CryptoNoble)
            );
            const outputs = await client.finalize(finData, rebuilt);
            assert.deepEqual(outputs.map(hex), v.outputs);
            for (let i = 0; i < inputs.length; i++) {
                assert.equal(hex(await server.evaluate(inputs[i])), v.outputs[i]);
            }

            // voprf-ts's own framing, which the HTTP API deliberately does NOT use:
            //   EvaluationRequest.serialize() = u16be(count) || elements
            //   Evaluation.serialize()        = u16be(count) || elements || u8(mode=1) || c || s
            const n = v.inputs.length;
            const u16 = (x) => Buffer.from([x >> 8, x & 0xff]).toString('hex');
            assert.equal(hex(evalReq.serialize()), u16(n) + v.blinded.join(''));
            assert.equal(hex(ev.serialize()), u16(n) + v.evaluated.join('') + '01' + v.proof);
        });
    }
});

// ---------------------------------------------------------------------------
// Mock of Pavilion's OPRF HTTP API.

const PROVIDER = 'pavilion-test';
const TENANT = 'tenant-a';
const KEY_ID = 'req-key-1';
const TENANT_SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const SKEW_MS = 5 * 60 * 1000;

function json(res, status, obj) {
    const body = JSON.stringify(obj);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
}

function strictB64(s, len) {
    if (typeof s !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return null;
    const b = Buffer.from(s, 'base64');
    return b.toString('base64') === s && b.length === len ? new Uint8Array(b) : null;
}

/**
 * opts.privateKey: advertised/pinned OPRF key; opts.evalPrivateKey: key actually
 * used to evaluate and prove (defaults to privateKey); opts.tamper: 'proof' flips
 * one bit of c in the response.
 */
async function startMock(opts) {
    const advertised = generatePublicKey(SUITE, opts.privateKey, CryptoNoble);
    const server = new VOPRFServer(SUITE, opts.evalPrivateKey ?? opts.privateKey, CryptoNoble);
    // Tenant's request-verification key: derived with @noble/curves from the
    // seed and imported into node:crypto as SPKI (independent of client.mjs).
    const tenantPub = createPublicKey({
        key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), ed25519.getPublicKey(unhex(TENANT_SEED))]),
        format: 'der',
        type: 'spki'
    });
    const tenants = new Map([[TENANT, { keyId: KEY_ID, publicKey: tenantPub }]]);
    const log = { evaluateRequests: [], rejected: [] };

    const http = createServer(async (req, res) => {
        const chunks = [];
        for await (const c of req) chunks.push(c);
        const raw = Buffer.concat(chunks);
        const deny = (status, error, message) => {
            log.rejected.push({ status, error, message });
            json(res, status, { error, message });
        };
        try {
            if (req.method === 'GET' && req.url === '/v1/oprf/key') {
                return json(res, 200, { provider: PROVIDER, suite: 'ristretto255-SHA512', mode: 'voprf', public_key: b64(advertised) });
            }
            if (req.url !== '/v1/oprf/evaluate') return deny(404, 'not_found', req.url);
            if (req.method !== 'POST') return deny(405, 'method_not_allowed', req.method);
            if (req.headers['content-type'] !== 'application/json') return deny(415, 'unsupported_media_type', 'need application/json');

            const tenant = req.headers['x-pavilion-tenant'];
            const keyId = req.headers['x-pavilion-key-id'];
            const ts = req.headers['x-pavilion-timestamp'];
            const sig = req.headers['x-pavilion-signature'];
            if (!tenant || !keyId || !ts || !sig) return deny(401, 'unauthenticated', 'missing auth header');
            const t = tenants.get(tenant);
            if (!t || t.keyId !== keyId) return deny(401, 'unknown_key', `${tenant}/${keyId}`);
            if (!/^[0-9]{1,16}$/.test(ts) || Math.abs(Date.now() - Number(ts)) > SKEW_MS) return deny(401, 'stale_timestamp', ts);
            const sigBytes = strictB64(sig, 64);
            if (!sigBytes) return deny(401, 'bad_signature', 'signature is not 64 bytes of base64');
            const signed =
                `pavilion-oprf-v1\n${PROVIDER}\n${tenant}\n${keyId}\n${ts}\n` + createHash('sha256').update(raw).digest('hex');
            if (!verify(null, Buffer.from(signed, 'utf8'), t.publicKey, sigBytes)) {
                return deny(401, 'bad_signature', 'signature does not verify');
            }

            let body;
            try {
                body = JSON.parse(raw.toString('utf8'));
            } catch {
                return deny(400, 'bad_json', 'body is not JSON');
            }
            if (!Array.isArray(body?.blinded) || body.blinded.length === 0) return deny(400, 'bad_request', 'blinded[] required');
            const blinded = [];
            for (const [i, s] of body.blinded.entries()) {
                const bytes = strictB64(s, 32);
                if (!bytes) return deny(400, 'bad_element', `blinded[${i}]`);
                let e;
                try {
                    e = group.desElt(bytes);
                } catch {
                    return deny(400, 'bad_element', `blinded[${i}] not canonical`);
                }
                if (e.isIdentity()) return deny(400, 'bad_element', `blinded[${i}] is identity`);
                blinded.push(e);
            }
            log.evaluateRequests.push({ headers: req.headers, blinded: body.blinded });

            const ev = await server.blindEvaluate(new EvaluationRequest(blinded));
            const proof = Buffer.from(ev.proof.serialize()); // c || s, no mode byte, no prefix
            assert.equal(proof.length, 64);
            if (opts.tamper === 'proof') proof[0] ^= 0x01; // low bit of c (stays a canonical scalar)
            return json(res, 200, { evaluated: ev.evaluated.map((e) => b64(e.serialize())), proof: proof.toString('base64') });
        } catch (e) {
            return json(res, 500, { error: 'internal', message: String(e?.stack ?? e) });
        }
    });
    await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${http.address().port}`;
    return { url, log, publicKey: advertised, server, close: () => new Promise((r) => http.close(r)) };
}

/** Runs client.mjs as a child process (async: the mock lives in this process). */
function runClient(args) {
    return new Promise((resolve) => {
        execFile(process.execPath, [CLIENT, ...args], { cwd: HERE, timeout: 60_000 }, (err, stdout, stderr) => {
            resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr });
        });
    });
}

function clientArgs(mock, overrides = {}) {
    const o = {
        url: mock.url,
        provider: PROVIDER,
        tenant: TENANT,
        'key-id': KEY_ID,
        seed: TENANT_SEED,
        'public-key': hex(mock.publicKey),
        ...overrides
    };
    return Object.entries(o).flatMap(([k, v]) => [`--${k}`, v]);
}

const INPUTS = ['email:alice@example.com', 'phone:+15551234567', 'email:zoë@exämple.com', 'email:alice@example.com', RFC_INPUT_Z17];

describe('client.mjs against an in-process mock of the Pavilion OPRF API', () => {
    let rfcKey;
    before(async () => {
        rfcKey = await rfcKeyPair();
    });

    test('outputs equal VOPRFServer.evaluate() and the RFC vector; one signed batch', async () => {
        const mock = await startMock({ privateKey: rfcKey.privateKey });
        try {
            const r = await runClient([...clientArgs(mock), ...INPUTS]);
            assert.equal(r.code, 0, `client failed: ${r.stderr}`);
            const { outputs } = JSON.parse(r.stdout);
            const expected = [];
            for (const s of INPUTS) expected.push(hex(await mock.server.evaluate(new Uint8Array(Buffer.from(s, 'utf8')))));
            assert.deepEqual(outputs, expected);
            assert.equal(outputs.at(-1), RFC_OUTPUT_Z17, 'RFC 9497 A.1.2.2 output through the whole HTTP path');
            assert.equal(outputs[0], outputs[3], 'same input, same output despite fresh blinds');
            assert.ok(outputs.every((h) => /^[0-9a-f]{128}$/.test(h)));

            assert.equal(mock.log.evaluateRequests.length, 1, 'exactly one POST for the whole batch');
            assert.equal(mock.log.evaluateRequests[0].blinded.length, INPUTS.length);
            assert.equal(mock.log.rejected.length, 0);
        } finally {
            await mock.close();
        }
    });

    test('a random key works too (URL with trailing slash)', async () => {
        const privateKey = (await deriveKeyPair(Oprf.Mode.VOPRF, SUITE, crypto.getRandomValues(new Uint8Array(32)), new Uint8Array(0), CryptoNoble))
            .privateKey;
        const mock = await startMock({ privateKey });
        try {
            const r = await runClient([...clientArgs(mock, { url: mock.url + '/' }), 'email:bob@example.org']);
            assert.equal(r.code, 0, r.stderr);
            const { outputs } = JSON.parse(r.stdout);
            assert.deepEqual(outputs, [hex(await mock.server.evaluate(new Uint8Array(Buffer.from('email:bob@example.org'))))]);
            assert.notEqual(outputs[0], RFC_OUTPUT_Z17);
        } finally {
            await mock.close();
        }
    });

    test('tampered proof (one bit of c flipped) -> non-zero exit, proof failure', async () => {
        const mock = await startMock({ privateKey: rfcKey.privateKey, tamper: 'proof' });
        try {
            const r = await runClient([...clientArgs(mock), ...INPUTS]);
            assert.notEqual(r.code, 0);
            assert.equal(r.code, 4, r.stderr);
            assert.match(r.stderr, /proof/i);
            assert.equal(r.stdout, '');
        } finally {
            await mock.close();
        }
    });

    test('server evaluating (and proving) under a different key than the pinned one -> proof failure', async () => {
        const other = (await deriveKeyPair(Oprf.Mode.VOPRF, SUITE, unhex('11'.repeat(32)), new Uint8Array(0), CryptoNoble)).privateKey;
        const mock = await startMock({ privateKey: rfcKey.privateKey, evalPrivateKey: other });
        try {
            const r = await runClient([...clientArgs(mock), 'email:alice@example.com']);
            assert.equal(r.code, 4, r.stderr);
            assert.match(r.stderr, /proof/i);
        } finally {
            await mock.close();
        }
    });

    test('wrong signing seed -> HTTP 401, status and body printed, non-zero exit', async () => {
        const mock = await startMock({ privateKey: rfcKey.privateKey });
        try {
            const r = await runClient([...clientArgs(mock, { seed: '42'.repeat(32) }), 'email:alice@example.com']);
            assert.equal(r.code, 2, r.stderr);
            assert.match(r.stderr, /HTTP 401/);
            assert.match(r.stderr, /"error":"bad_signature"/);
            assert.equal(mock.log.evaluateRequests.length, 0);
        } finally {
            await mock.close();
        }
    });

    test('pinned public key differs from GET /v1/oprf/key -> non-zero exit', async () => {
        const mock = await startMock({ privateKey: rfcKey.privateKey });
        try {
            const otherPk = generatePublicKey(SUITE, group.desScalar(unhex('07' + '00'.repeat(31))).serialize(), CryptoNoble);
            const r = await runClient([...clientArgs(mock, { 'public-key': hex(otherPk) }), 'x']);
            assert.equal(r.code, 3, r.stderr);
            assert.match(r.stderr, /public_key/);
            // and with the GET check skipped, the DLEQ proof still catches it
            const r2 = await runClient([...clientArgs(mock, { 'public-key': hex(otherPk) }), '--skip-key-check', 'x']);
            assert.equal(r2.code, 4, r2.stderr);
        } finally {
            await mock.close();
        }
    });

    test('the mock really checks signatures (unsigned / body-altered requests are 401)', async () => {
        const mock = await startMock({ privateKey: rfcKey.privateKey });
        try {
            const body = JSON.stringify({ blinded: [b64(group.generator().serialize())] });
            const unsigned = await fetch(`${mock.url}/v1/oprf/evaluate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
            assert.equal(unsigned.status, 401);
            assert.equal((await unsigned.json()).error, 'unauthenticated');

            const ts = String(Date.now());
            const { ed25519PrivateKeyFromSeed, signingMessage } = await import('./client.mjs');
            const { sign } = await import('node:crypto');
            const sig = sign(null, Buffer.from(signingMessage(PROVIDER, TENANT, KEY_ID, ts, Buffer.from(body))), ed25519PrivateKeyFromSeed(unhex(TENANT_SEED)));
            const headers = {
                'content-type': 'application/json',
                'x-pavilion-tenant': TENANT,
                'x-pavilion-key-id': KEY_ID,
                'x-pavilion-timestamp': ts,
                'x-pavilion-signature': sig.toString('base64')
            };
            const ok = await fetch(`${mock.url}/v1/oprf/evaluate`, { method: 'POST', headers, body });
            assert.equal(ok.status, 200);
            const altered = await fetch(`${mock.url}/v1/oprf/evaluate`, { method: 'POST', headers, body: body + ' ' });
            assert.equal(altered.status, 401);
        } finally {
            await mock.close();
        }
    });

    test('usage errors exit 1', async () => {
        const r = await runClient(['--url', 'http://127.0.0.1:1']);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /usage/);
    });
});
