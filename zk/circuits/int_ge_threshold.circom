pragma circom 2.1.0;

// int_ge_threshold: the committed integer is at least the public threshold ("income >= X").
// The integer is unsigned and below 2^64.
//
// Public inputs, in this order: commitment, threshold, nonce.
// Private inputs: value, attributeType, subjectBinding, salt.

include "commitment.circom";
include "circomlib/circuits/comparators.circom";

template IntGeThreshold() {
    signal input commitment;
    signal input threshold;
    signal input nonce;

    signal input value;
    signal input attributeType;
    signal input subjectBinding;
    signal input salt;

    // Both sides of the comparison fit in 64 bits, which GreaterEqThan(64) needs to be sound.
    component valueRange = RangeCheck(64);
    valueRange.in <== value;
    component thresholdRange = RangeCheck(64);
    thresholdRange.in <== threshold;

    component ge = GreaterEqThan(64);
    ge.in[0] <== value;
    ge.in[1] <== threshold;
    ge.out === 1;

    component opens = OpensCommitment();
    opens.commitment <== commitment;
    opens.attribute <== value;
    opens.attributeType <== attributeType;
    opens.subjectBinding <== subjectBinding;
    opens.salt <== salt;

    component bindNonce = BindPublic();
    bindNonce.in <== nonce;
}

component main {public [commitment, threshold, nonce]} = IntGeThreshold();
