pragma circom 2.1.0;

// date_le_cutoff: the committed date is on or before the public cutoff.
// "Born on or before 2008-05-14" is "18 or older on 2026-05-14".
//
// Dates are calendar dates written as the integer YYYYMMDD (2008-05-14 is 20080514): integer
// order is date order, every date from year 0 to 9999 is non-negative and below 2^27, and the
// caller's cutoff needs no calendar arithmetic beyond subtracting years.
//
// Public inputs, in this order: commitment, cutoff, nonce.
// Private inputs: date, attributeType, subjectBinding, salt.

include "commitment.circom";
include "circomlib/circuits/comparators.circom";

template DateLeCutoff() {
    signal input commitment;
    signal input cutoff;
    signal input nonce;

    signal input date;
    signal input attributeType;
    signal input subjectBinding;
    signal input salt;

    // Both sides of the comparison fit in 32 bits, which LessEqThan(32) needs to be sound.
    component dateRange = RangeCheck(32);
    dateRange.in <== date;
    component cutoffRange = RangeCheck(32);
    cutoffRange.in <== cutoff;

    component le = LessEqThan(32);
    le.in[0] <== date;
    le.in[1] <== cutoff;
    le.out === 1;

    component opens = OpensCommitment();
    opens.commitment <== commitment;
    opens.attribute <== date;
    opens.attributeType <== attributeType;
    opens.subjectBinding <== subjectBinding;
    opens.salt <== salt;

    component bindNonce = BindPublic();
    bindNonce.in <== nonce;
}

component main {public [commitment, cutoff, nonce]} = DateLeCutoff();
