//! The audit log's C2SP checkpoints: signed notes as `audit verify` and the demo's end-to-end
//! check open them (`note::open`), and verifier keys as they are given on the command line
//! (`NoteKey::from_vkey`).
//!
//! Input: a note or a vkey (UTF-8; both readers get it); the same bytes also build a
//! checkpoint and a key name for the round trips.
//!
//! Asserts: nothing panics; a note opened has a non-empty one-line origin; a checkpoint signed
//! (`signed_note`) opens to itself under its key and to an error under another; a vkey made
//! (`vkey`) reads back to its name and key.
#![no_main]

use ed25519_dalek::Signer as _;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pavilion_audit::note::{open, signed_note, vkey, CheckpointBody, NoteKey};
use pavilion_fuzz::{signing_key, verifying_key, NOTE_NAME};

fn known() -> [NoteKey; 1] {
    [NoteKey {
        name: NOTE_NAME.to_owned(),
        public_key: verifying_key().to_bytes(),
    }]
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(body) = open(text, &known()) {
            assert!(!body.origin.is_empty() && !body.origin.contains('\n'));
        }
        if let Ok(key) = NoteKey::from_vkey(text) {
            assert!(text.starts_with(&format!("{}+", key.name)));
        }
    }
    let _ = round_trip(&mut Unstructured::new(data));
});

fn round_trip(u: &mut Unstructured) -> Result<()> {
    let origin: String = u.arbitrary()?;
    let body = CheckpointBody {
        origin,
        size: u.arbitrary()?,
        root: u.arbitrary()?,
    };
    // A note's origin is one non-empty line.
    if !body.origin.is_empty() && !body.origin.contains('\n') {
        let public_key = verifying_key().to_bytes();
        let signature = signing_key().sign(body.text().as_bytes()).to_bytes();
        let note = signed_note(&body, NOTE_NAME, &public_key, &signature);
        assert_eq!(open(&note, &known()), Ok(body.clone()));
        let stranger = [NoteKey {
            name: NOTE_NAME.to_owned(),
            public_key: [9; 32],
        }];
        assert!(open(&note, &stranger).is_err());
    }
    // A key name is one word without `+` (the signed-note spec).
    let name: String = u.arbitrary()?;
    if !name.is_empty() && !name.contains(['+', ' ', '\n']) {
        let public_key: [u8; 32] = u.arbitrary()?;
        assert_eq!(
            NoteKey::from_vkey(&vkey(&name, &public_key)),
            Ok(NoteKey { name, public_key })
        );
    }
    Ok(())
}
