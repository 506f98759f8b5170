#!/usr/bin/env node
// Independent RFC 9497 VOPRF client (ristretto255-SHA512) for Pavilion's OPRF
// HTTP service, built on @cloudflare/voprf-ts with the @noble/curves provider.
//
//   node client.mjs --url URL --provider ID --tenant T --key-id K \
//       --seed HEX32 --public-key HEX32 [--timeout-ms N] [--skip-key-check] INPUT...
//
// Each INPUT is an already-normalized OPRF input string; its UTF-8 bytes are
// the RFC 9497 input. All inputs are blinded and sent in ONE signed
// POST /v1/oprf/evaluate; the batch DLEQ proof is verified against
// --public-key by voprf-ts's VOPRFClient.finalize. On success prints
// {"outputs": ["<hex of 64 bytes>", ...]} (input order) on stdout, exit 0.
//
// Exit codes: 1 usage / bad arguments, 2 HTTP or transport error (status and
// body are printed), 3 malformed response or key mismatch, 4 proof failure.
//
// Wire format (exactly RFC 9497 encodings, no voprf-ts framing):
//   blinded / evaluated element: 32-byte ristretto255 encoding, base64 std.
//   proof: SerializeScalar(c) || SerializeScalar(s), 32-byte little-endian each.
// voprf-ts's own EvaluationRequest/Evaluation.serialize() add a u16 count
// prefix (and, for Evaluation, a mode byte before the proof), so they are NOT
// used; objects are built from the raw elements and scalars instead.

import { createHash, createPrivateKey, sign } from 'node:crypto';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

import { DLEQProof, Evaluation, Oprf, VOPRFClient } from '@cloudflare/voprf-ts';
import { CryptoNoble } from '@cloudflare/voprf-ts/crypto-noble';

export const SUITE = Oprf.Suite.RISTRETTO255_SHA512; // "ristretto255-SHA512"
export const SIGNING_CONTEXT = 'pavilion-oprf-v1';
const ELEMENT_LEN = 32;
const PROOF_LEN = 64;
const OUTPUT_LEN = 64;
// PKCS#8 DER prefix for an Ed25519 private key; the 32-byte seed follows.
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

class CliError extends Error {
    constructor(code, message) {
        super(message);
        this.exitCode = code;
    }
}

function usage() {
    return (
        'usage: node client.mjs --url URL --provider ID --tenant T --key-id K ' +
        '--seed HEX32 --public-key HEX32 [--timeout-ms N] [--skip-key-check] INPUT...'
    );
}

function parseHex32(name, value) {
    if (typeof value !== 'string' || !/^[0-9a-fA-F]{64}$/.test(value)) {
        throw new CliError(1, `--${name} must be 32 bytes as 64 hex characters`);
    }
    return new Uint8Array(Buffer.from(value, 'hex'));
}

/** Strict standard base64 (with padding) decode; rejects anything non-canonical. */
export function decodeB64(what, value, expectedLen) {
    if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) {
        throw new CliError(3, `${what}: not a standard padded base64 string: ${JSON.stringify(value)}`);
    }
    const bytes = Buffer.from(value, 'base64');
    if (bytes.toString('base64') !== value) {
        throw new CliError(3, `${what}: non-canonical base64: ${JSON.stringify(value)}`);
    }
    if (expectedLen !== undefined && bytes.length !== expectedLen) {
        throw new CliError(3, `${what}: expected ${expectedLen} bytes, got ${bytes.length}`);
    }
    return new Uint8Array(bytes);
}

/** The exact string that is signed with the tenant's Ed25519 key. */
export function signingMessage(provider, tenant, keyId, timestamp, bodyBytes) {
    const bodyHash = createHash('sha256').update(bodyBytes).digest('hex');
    return [SIGNING_CONTEXT, provider, tenant, keyId, timestamp, bodyHash].join('\n');
}

export function ed25519PrivateKeyFromSeed(seed) {
    return createPrivateKey({
        key: Buffer.concat([ED25519_PKCS8_PREFIX, Buffer.from(seed)]),
        format: 'der',
        type: 'pkcs8'
    });
}

function endpoint(base, path) {
    return base.replace(/\/+$/, '') + path;
}

async function httpCall(url, init, timeoutMs) {
    let res;
    try {
        res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
    } catch (e) {
        throw new CliError(2, `${init.method} ${url} failed: ${e?.cause?.message ?? e.message}`);
    }
    const text = await res.text();
    if (res.status !== 200) {
        throw new CliError(2, `${init.method} ${url} -> HTTP ${res.status}\n${text}`);
    }
    try {
        return JSON.parse(text);
    } catch {
        throw new CliError(3, `${init.method} ${url} -> 200 with a non-JSON body:\n${text}`);
    }
}

export async function run(argv) {
    let parsed;
    try {
        parsed = parseArgs({
            args: argv,
            allowPositionals: true,
            strict: true,
            options: {
                url: { type: 'string' },
                provider: { type: 'string' },
                tenant: { type: 'string' },
                'key-id': { type: 'string' },
                seed: { type: 'string' },
                'public-key': { type: 'string' },
                'timeout-ms': { type: 'string', default: '30000' },
                'skip-key-check': { type: 'boolean', default: false }
            }
        });
    } catch (e) {
        throw new CliError(1, `${e.message}\n${usage()}`);
    }
    const { values: o, positionals: inputs } = parsed;
    for (const k of ['url', 'provider', 'tenant', 'key-id', 'seed', 'public-key']) {
        if (!o[k]) throw new CliError(1, `missing --${k}\n${usage()}`);
    }
    if (inputs.length === 0) throw new CliError(1, `at least one INPUT is required\n${usage()}`);
    const timeoutMs = Number(o['timeout-ms']);
    if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new CliError(1, '--timeout-ms must be a positive integer');
    const seed = parseHex32('seed', o.seed);
    const publicKey = parseHex32('public-key', o['public-key']);

    const group = Oprf.getGroup(SUITE, CryptoNoble);
    let pkElt;
    try {
        pkElt = group.desElt(publicKey);
    } catch (e) {
        throw new CliError(1, `--public-key is not a valid ristretto255 element: ${e.message}`);
    }
    if (pkElt.isIdentity()) throw new CliError(1, '--public-key is the identity element');

    // 0. Optional sanity check of GET /v1/oprf/key against the pinned key.
    if (!o['skip-key-check']) {
        const info = await httpCall(endpoint(o.url, '/v1/oprf/key'), { method: 'GET' }, timeoutMs);
        const want = { provider: o.provider, suite: 'ristretto255-SHA512', mode: 'voprf' };
        for (const [k, v] of Object.entries(want)) {
            if (info?.[k] !== v) {
                throw new CliError(3, `GET /v1/oprf/key: ${k} is ${JSON.stringify(info?.[k])}, expected ${JSON.stringify(v)}`);
            }
        }
        const served = decodeB64('GET /v1/oprf/key public_key', info.public_key, ELEMENT_LEN);
        if (!Buffer.from(served).equals(Buffer.from(publicKey))) {
            throw new CliError(
                3,
                `GET /v1/oprf/key public_key ${Buffer.from(served).toString('hex')} != --public-key ${o['public-key'].toLowerCase()}`
            );
        }
    }

    // 1. Blind all inputs (random blinds, VOPRF mode, ristretto255-SHA512).
    const client = new VOPRFClient(SUITE, publicKey, CryptoNoble);
    const inputBytes = inputs.map((s) => new Uint8Array(Buffer.from(s, 'utf8')));
    const [finData, evalReq] = await client.blind(inputBytes);

    // 2. One signed batch request. Raw 32-byte element encodings, base64 std.
    const body = Buffer.from(
        JSON.stringify({ blinded: evalReq.blinded.map((e) => Buffer.from(e.serialize()).toString('base64')) }),
        'utf8'
    );
    const timestamp = String(Date.now());
    const msg = signingMessage(o.provider, o.tenant, o['key-id'], timestamp, body);
    const signature = sign(null, Buffer.from(msg, 'utf8'), ed25519PrivateKeyFromSeed(seed));
    const resp = await httpCall(
        endpoint(o.url, '/v1/oprf/evaluate'),
        {
            method: 'POST',
            headers: {
                'content-type': 'application/json',
                'x-pavilion-tenant': o.tenant,
                'x-pavilion-key-id': o['key-id'],
                'x-pavilion-timestamp': timestamp,
                'x-pavilion-signature': signature.toString('base64')
            },
            body
        },
        timeoutMs
    );

    // 3. Deserialize the raw evaluated elements and the raw c || s proof.
    if (!Array.isArray(resp?.evaluated)) throw new CliError(3, `response has no "evaluated" array: ${JSON.stringify(resp)}`);
    if (resp.evaluated.length !== inputs.length) {
        throw new CliError(3, `response has ${resp.evaluated.length} evaluated elements for ${inputs.length} inputs`);
    }
    const evaluated = resp.evaluated.map((b64, i) => {
        const raw = decodeB64(`evaluated[${i}]`, b64, ELEMENT_LEN);
        let elt;
        try {
            elt = group.desElt(raw);
        } catch (e) {
            throw new CliError(3, `evaluated[${i}] is not a canonical ristretto255 encoding: ${e.message}`);
        }
        // RFC 9497 section 4.1: DeserializeElement rejects the identity.
        if (elt.isIdentity()) throw new CliError(3, `evaluated[${i}] is the identity element`);
        return elt;
    });
    const proofBytes = decodeB64('proof', resp.proof, PROOF_LEN);
    let proof;
    try {
        proof = DLEQProof.deserialize(group.id, proofBytes, CryptoNoble); // c = [0,32), s = [32,64), LE scalars
    } catch (e) {
        throw new CliError(3, `proof is not two canonical scalars: ${e.message}`);
    }
    const evaluation = new Evaluation(Oprf.Mode.VOPRF, evaluated, proof);

    // 4. Verify the batch DLEQ proof against --public-key and finalize.
    let outputs;
    try {
        outputs = await client.finalize(finData, evaluation);
    } catch (e) {
        throw new CliError(4, `VOPRF finalize failed (DLEQ proof did not verify against --public-key): ${e.message}`);
    }
    if (outputs.length !== inputs.length || outputs.some((x) => x.length !== OUTPUT_LEN)) {
        throw new CliError(3, 'unexpected finalize output shape');
    }
    return { outputs: outputs.map((x) => Buffer.from(x).toString('hex')) };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
    run(process.argv.slice(2)).then(
        (result) => {
            process.stdout.write(JSON.stringify(result) + '\n');
        },
        (e) => {
            process.stderr.write(`voprf-ts client: ${e.message}\n`);
            process.exitCode = e instanceof CliError ? e.exitCode : 3;
        }
    );
}
