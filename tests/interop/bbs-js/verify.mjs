// Verifies a BBS proof with @digitalbazaar/bbs-signatures, an implementation independent of
// Pavilion's (zkryptium). Reads one JSON object on stdin, all byte strings in hex:
//   {"publicKey", "proof", "header", "presentationHeader", "disclosed": [[index, message], ...]}
// and prints {"verified": true|false}. Exits 2 on input it cannot read.
import * as bbs from '@digitalbazaar/bbs-signatures';

const hex = (s) => Uint8Array.from(Buffer.from(s, 'hex'));
let input = '';
for await (const chunk of process.stdin) input += chunk;
let v;
try {
  v = JSON.parse(input);
} catch (e) {
  console.error(`not JSON: ${e.message}`);
  process.exit(2);
}
let verified;
try {
  verified = await bbs.verifyProof({
    publicKey: hex(v.publicKey),
    proof: hex(v.proof),
    header: hex(v.header),
    presentationHeader: hex(v.presentationHeader),
    disclosedMessages: v.disclosed.map(([, m]) => hex(m)),
    disclosedMessageIndexes: v.disclosed.map(([i]) => i),
    ciphersuite: bbs.CIPHERSUITES.BLS12381_SHA256
  });
} catch (e) {
  // The library throws on malformed input rather than answering false.
  console.error(`refused: ${e.message}`);
  verified = false;
}
console.log(JSON.stringify({verified}));
