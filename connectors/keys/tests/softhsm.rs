//! The HSM key ring against a real PKCS#11 module (SoftHSM2, installed by scripts/infra):
//! keys generated on a fresh token sign, and every signature is verified independently with
//! ed25519-dalek against the public key read back for the JWKS (SoftHSM has been known to
//! ignore mechanism parameters; a signature is only trusted once checked outside it).

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use pavilion_keys::hsm::{HsmConfig, HsmKeyRing};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[test]
fn keys_made_in_the_token_sign_and_their_signatures_verify_outside_it() {
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM2 is not installed ({MODULE}); scripts/infra install does it"
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .unwrap();
    // The module reads its configuration at C_Initialize; this test is alone in its binary.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let init = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "pavilion-test"])
        .args(["--so-pin", "1234", "--pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let ring = HsmKeyRing::open(&HsmConfig {
        module: MODULE.into(),
        token: "pavilion-test".into(),
        pin: "5678".into(),
    })
    .unwrap();
    let first = ring.generate().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let second = ring.generate().unwrap();
    assert_eq!(
        ring.current_key_id().unwrap(),
        second.kid,
        "the newest key signs"
    );
    let jwks = pavilion_keys::jwks(&ring.list().unwrap());
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    for (kid, message) in [(&first.kid, b"before".as_slice()), (&second.kid, b"after")] {
        let signature = ring.sign(kid, message).unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap();
        let x: [u8; 32] = B64URL
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let key = VerifyingKey::from_bytes(&x).unwrap();
        let signature = Signature::from_slice(&signature).unwrap();
        assert!(key.verify(message, &signature).is_ok(), "{kid}");
        assert!(key.verify(b"something else", &signature).is_err());
    }
    assert!(ring.sign("k0-missing", b"x").is_err());
    // The pseudonym secret lives in the token too: HMAC inside it, deterministic.
    let h = ring.keyed_hash(b"tenant|token").unwrap();
    assert_eq!(h.len(), 32);
    assert_eq!(ring.keyed_hash(b"tenant|token").unwrap(), h);
    assert_ne!(ring.keyed_hash(b"other|token").unwrap(), h);
    // A wrong PIN is refused.
    assert!(HsmKeyRing::open(&HsmConfig {
        module: MODULE.into(),
        token: "pavilion-test".into(),
        pin: "0000".into(),
    })
    .is_err());
}
