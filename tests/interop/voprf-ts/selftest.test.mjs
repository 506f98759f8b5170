// Picked up by `node --test <this folder>` (Node 20 only auto-discovers
// *.test.mjs-style names); the tests themselves live in selftest.mjs.
import './selftest.mjs';
