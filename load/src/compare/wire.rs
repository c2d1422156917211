//! `compare --tls` and `compare --deflate`: what changes when the comparison runs over TLS or
//! compressed. `--tls` makes a self-signed certificate for the run ([`crate::testcert`], in a
//! temporary directory removed afterwards), starts wsreactor with it and tungstenite as
//! `peer-tungstenite-tls`, drops servers that cannot serve TLS and the raw TCP ceiling (which
//! is no ceiling for TLS), and runs 100 × 20 B and 1 × 1 MiB echo, plus the idle workload,
//! whose every connection is then a full TLS handshake. `--deflate` keeps the servers that
//! negotiate permessage-deflate (wsreactor, yawc; yawc is added if missing), and runs
//! 100 × 400 B and 10 × 32 KiB JSON-like text, compressed both ways.
//!
//! It owns that choice of servers, shapes and wire settings; it must not run workloads.

use super::servers::{Launch, Server};
use super::Results;
use super::{CompareArgs, Shape};
use crate::engine::tls::{TlsOptions, TlsTrust};
use crate::engine::Wire;
use crate::report::size_label;
use crate::testcert::{self, CertFiles};
use std::path::{Path, PathBuf};

/// The wire settings of a run and what must be cleaned up after it.
pub(super) struct RunWire {
    /// What every workload's connections use.
    pub(super) wire: Wire,
    /// A label for the table ("TLS", "permessage-deflate"), `None` for plain.
    pub(super) label: Option<String>,
    /// The directory holding the run's certificate and key.
    cert_dir: Option<PathBuf>,
}

impl Drop for RunWire {
    fn drop(&mut self) {
        if let Some(d) = &self.cert_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Servers that negotiate permessage-deflate.
const COMPRESSING: [&str; 2] = ["wsreactor", "yawc"];

/// The shapes of a `--tls` or `--deflate` run (`None`: the standard ones).
pub(super) fn shapes(a: &CompareArgs) -> Option<Vec<Shape>> {
    let s = |connections, size| Shape {
        connections,
        size,
        pipeline: 1,
        mix: false,
    };
    if a.tls {
        Some(vec![s(100, 20), s(1, 1 << 20)])
    } else if a.deflate {
        Some(vec![s(100, 400), s(10, 32 * 1024)])
    } else {
        None
    }
}

/// Rewrites a built-in server to serve TLS with `cert`; `Err` names why it cannot.
fn to_tls(s: &mut Server, cert: &CertFiles) -> Result<(), String> {
    let Launch::Command(argv) = &mut s.launch else {
        return Err("a --target cannot be switched to TLS".into());
    };
    let (c, k) = (
        cert.cert.to_string_lossy().into_owned(),
        cert.key.to_string_lossy().into_owned(),
    );
    if s.builtin {
        let bin = Path::new(&argv[0]);
        let file = bin.file_name().and_then(|f| f.to_str()).unwrap_or("");
        match file {
            "wsreactor" => {}
            "peer-tungstenite" => {
                argv[0] = bin
                    .with_file_name("peer-tungstenite-tls")
                    .to_string_lossy()
                    .into_owned();
            }
            _ => return Err("it has no TLS".into()),
        }
        argv.extend(["--tls-cert".into(), c, "--tls-key".into(), k]);
    } else {
        // A --server command gets the files where it asks for them.
        if !argv.iter().any(|x| x.contains("{tls-cert}")) {
            return Err("its COMMAND has no {tls-cert} (and {tls-key}) to fill in".into());
        }
        for x in argv.iter_mut() {
            *x = x.replace("{tls-cert}", &c).replace("{tls-key}", &k);
        }
    }
    s.tls = true;
    Ok(())
}

/// Adapts the server list to `--tls` or `--deflate` and returns the wire settings.
pub(super) fn adapt(
    a: &CompareArgs,
    servers: &mut Vec<Server>,
    bin_dir: &Path,
) -> Result<RunWire, String> {
    let mut run = RunWire {
        wire: Wire::default(),
        label: None,
        cert_dir: None,
    };
    let skip = |name: &str, why: &str| eprintln!("compare: {name} left out: {why}");
    if a.tls {
        let dir = std::env::temp_dir().join(format!("wsrload-compare-tls-{}", std::process::id()));
        run.cert_dir = Some(dir.clone());
        let cert = testcert::write_self_signed(&dir)?;
        servers.retain_mut(|s| {
            if s.raw {
                return false; // plain TCP is no ceiling for TLS
            }
            match to_tls(s, &cert) {
                Ok(()) => true,
                Err(why) => {
                    skip(&s.name, &why);
                    false
                }
            }
        });
        run.wire.tls = TlsOptions {
            trust: TlsTrust::Ca(cert.cert.clone()),
            resume: false,
        };
        run.label = Some(
            "TLS 1.3 (rustls on ring in the generator), a self-signed ECDSA P-256 certificate \
             made for the run; every connection is a full handshake"
                .into(),
        );
    } else if a.deflate {
        servers.retain(|s| {
            if s.raw {
                return false; // the raw ceiling sends nothing compressed
            }
            let ok = !s.builtin || COMPRESSING.contains(&s.name.as_str());
            if !ok {
                skip(&s.name, "it has no permessage-deflate");
            }
            ok
        });
        if !servers.iter().any(|s| s.name == "yawc") {
            servers.push(Server::builtin("yawc", bin_dir)?);
        }
        run.wire.deflate = true;
        run.label = Some(format!(
            "permessage-deflate, no context takeover either way; JSON-like text (see {}), \
             every echo inflated and checked",
            "`wsrload echo --deflate`"
        ));
    }
    if servers.is_empty() {
        return Err("no server left to compare".into());
    }
    Ok(run)
}

/// `--deflate`: a Markdown section of the bytes on the wire per workload and server (medians
/// over rounds of wire bytes / payload bytes of the echoes); empty for other runs.
pub(super) fn wire_bytes_section(res: &Results, names: &[String]) -> String {
    use std::fmt::Write as _;
    let mut rows: Vec<(String, String, f64, f64)> = Vec::new();
    let mut shapes: Vec<Shape> = res.echo.iter().map(|r| r.shape).collect();
    shapes.sort();
    shapes.dedup();
    for shape in shapes {
        for name in names {
            let mut recv: Vec<f64> = Vec::new();
            let mut sent: Vec<f64> = Vec::new();
            for r in res
                .echo
                .iter()
                .filter(|r| r.shape == shape && &r.server == name)
            {
                if let Ok(Some(c)) = r.report.as_ref().map(|x| x.compression.as_ref()) {
                    recv.push(c.ratio_recv);
                    sent.push(c.ratio_sent);
                }
            }
            if recv.is_empty() {
                continue;
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            rows.push((
                format!("{} x {}", shape.connections, size_label(shape.size)),
                name.clone(),
                median(&mut recv),
                median(&mut sent),
            ));
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n### Bytes on the wire\n\nEchoes' payload bytes as framed (compressed) over their \
         inflated size, median over rounds; the generator sends at zlib level 6.\n\n\
         | workload | server | echo wire/payload | sent wire/payload |\n|---|---|--:|--:|\n",
    );
    for (wl, name, recv, sent) in rows {
        let _ = writeln!(s, "| {wl} | {name} | {recv:.3} | {sent:.3} |");
    }
    s
}
