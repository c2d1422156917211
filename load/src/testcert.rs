//! A self-signed certificate for `127.0.0.1` and `localhost`, made at run time with `rcgen`
//! and written as PEM files, for the TLS servers `compare` starts and the tests run: no
//! private key is ever committed. It owns only making and writing those two files.

use std::path::{Path, PathBuf};

/// Paths of a certificate (PEM) and its private key (PEM).
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate, also what `wsrload --tls-ca` trusts.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Makes a fresh certificate and key (ECDSA P-256, rcgen's default) and writes them into
/// `dir` as `cert.pem` and `key.pem`; the key file is readable by its owner only.
pub fn write_self_signed(dir: &Path) -> Result<CertFiles, String> {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| format!("rcgen: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let files = CertFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, ck.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", files.cert.display()))?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&files.key)
            .map_err(|e| format!("cannot write {}: {e}", files.key.display()))?;
        f.write_all(ck.signing_key.serialize_pem().as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", files.key.display()))?;
    }
    Ok(files)
}
