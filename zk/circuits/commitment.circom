pragma circom 2.1.0;

// Shared pieces of pavilion-zk's predicate circuits.
//
// A provider commits to one attribute of one subject as
//   Poseidon(attribute, attribute_type, subject_binding, salt)
// (circomlib's Poseidon over BN254's scalar field, 4 inputs). The salt is a field element of at
// least 128 random bits, so the commitment hides low-entropy attributes such as birth dates.

include "circomlib/circuits/poseidon.circom";
include "circomlib/circuits/bitify.circom";

// Opens a commitment: constrains `commitment` to be the Poseidon hash of the four private values.
template OpensCommitment() {
    signal input commitment;
    signal input attribute;
    signal input attributeType;
    signal input subjectBinding;
    signal input salt;

    component hash = Poseidon(4);
    hash.inputs[0] <== attribute;
    hash.inputs[1] <== attributeType;
    hash.inputs[2] <== subjectBinding;
    hash.inputs[3] <== salt;
    commitment === hash.out;
}

// Binds a public input that otherwise appears in no constraint. In Groth16 an unconstrained
// public input has a zero term in the verifying key, so a proof would verify for any value of
// it; one multiplication gives it a non-zero term and ties the proof to it.
template BindPublic() {
    signal input in;
    signal square;
    square <== in * in;
}

// Constrains `in` to n bits (0 <= in < 2^n), so comparisons on it cannot wrap around the field.
template RangeCheck(n) {
    signal input in;
    component bits = Num2Bits(n);
    bits.in <== in;
}
