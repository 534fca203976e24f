//! The cost of SOPS decryption (hack/bench.sh): a directory of encrypted Secrets,
//! one a file as a GitOps repository holds them (each its own data key, unwrapped
//! with age), loaded by converge's manifest loader, against the same Secrets in
//! plain text. The difference is what decryption adds per 1000 Secrets.
//!
//!   cargo run --release --example sops_decrypt -- ENCRYPTED_DIR PLAIN_DIR KEY_FILE [ROUNDS]

use converge::manifest::{Limits, load_decrypting};
use converge::sops::AgeKeys;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [encrypted, plain, key_file, rest @ ..] = &args[..] else {
        return Err("usage: sops_decrypt ENCRYPTED_DIR PLAIN_DIR KEY_FILE [ROUNDS]".into());
    };
    let rounds: u32 = rest.first().map_or(Ok(5), |r| r.parse())?;
    let mut keys = AgeKeys::default();
    keys.add_file(std::path::Path::new(key_file))?;
    let none = AgeKeys::default();
    let time =
        |dir: &str, keys: &AgeKeys| -> Result<(Duration, usize), Box<dyn std::error::Error>> {
            let mut best = Duration::MAX;
            let mut count = 0;
            for _ in 0..rounds {
                let started = Instant::now();
                count = load_decrypting(&[PathBuf::from(dir)], Limits::default(), keys)?.len();
                best = best.min(started.elapsed());
            }
            Ok((best, count))
        };
    let (sealed, secrets) = time(encrypted, &keys)?;
    let (open, plain_count) = time(plain, &none)?;
    assert_eq!(
        secrets, plain_count,
        "the two directories hold the same Secrets"
    );
    let per_1000 = |d: Duration| d.as_secs_f64() * 1000.0 * 1000.0 / secrets as f64;
    println!(
        "{}",
        serde_json::json!({
            "secrets": secrets,
            "rounds": rounds,
            "load_encrypted_ms_per_1000": per_1000(sealed),
            "load_plain_ms_per_1000": per_1000(open),
            "decryption_ms_per_1000": per_1000(sealed.saturating_sub(open)),
        })
    );
    Ok(())
}
