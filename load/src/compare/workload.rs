//! The comparison's workloads: the standard echo shapes every server runs, the one mix
//! workload `--sizes`/`--kinds` ask for instead, and the settings of one echo run of a shape
//! against one server. It must not start servers or run anything.

use super::servers::{Instance, Server};
use super::CompareArgs;
use crate::engine::Mode;
use crate::payload::Kind;
use crate::report::size_label;
use crate::workloads::{self, EchoConfig};
use serde::{Deserialize, Serialize};

/// One echo traffic shape of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shape {
    /// Connections.
    pub connections: usize,
    /// Message size.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// The `--sizes`/`--kinds` mix (`size` is then its largest size; [`Results::mix`] says
    /// what the mix was).
    #[serde(default)]
    pub mix: bool,
}

impl Shape {
    /// "100 x 20 B p16", or "100 x mix ≤ 64 KiB" for the mix.
    pub fn label(&self) -> String {
        format!(
            "{} x {}{}{}",
            self.connections,
            if self.mix { "mix ≤ " } else { "" },
            size_label(self.size),
            if self.pipeline > 1 {
                format!(" p{}", self.pipeline)
            } else {
                String::new()
            }
        )
    }
}

/// The shapes every server runs, in text and in binary.
pub fn shapes() -> Vec<Shape> {
    let s = |connections, size, pipeline| Shape {
        connections,
        size,
        pipeline,
        mix: false,
    };
    vec![
        s(100, 20, 1),
        s(100, 20, 16),
        s(100, 1024, 1),
        s(10, 16 * 1024, 1),
        s(1, 1 << 20, 1),
    ]
}

/// The mix workload `--sizes`/`--kinds` ask for, if any.
pub(super) struct WorkloadMix {
    pub(super) shape: Shape,
    pub(super) sizes: Vec<(usize, u32)>,
    pub(super) kinds: Vec<(Kind, u32)>,
    pub(super) label: String,
}

pub(super) fn workload_mix(a: &CompareArgs) -> Result<Option<WorkloadMix>, String> {
    if a.sizes.is_none() && a.kinds.is_none() {
        return Ok(None);
    }
    let sizes = a
        .sizes
        .clone()
        .map(|m| m.0)
        .unwrap_or_else(|| vec![(20, 1)]);
    let kinds = a
        .kinds
        .clone()
        .map(|m| m.0)
        .unwrap_or_else(|| vec![(Kind::Text, 1), (Kind::Binary, 1)]);
    // Checked here once, so that a bad mix fails before any server starts.
    let checked = crate::payload::Mix::new(&sizes, &kinds)?;
    if a.connections == 0 || a.connections > workloads::MAX_CONNECTIONS || a.pipeline == 0 {
        return Err("--connections must be 1..=19500 and --pipeline at least 1".into());
    }
    let list = |v: Vec<String>| v.join(",");
    let label = format!(
        "sizes {}, kinds {}",
        list(
            sizes
                .iter()
                .map(|(s, w)| format!("{}:{w}", size_label(*s).replace(' ', "")))
                .collect()
        ),
        list(
            kinds
                .iter()
                .map(|(k, w)| format!("{}:{w}", k.name()))
                .collect()
        )
    );
    Ok(Some(WorkloadMix {
        shape: Shape {
            connections: a.connections,
            size: checked.max_size(),
            pipeline: a.pipeline,
            mix: true,
        },
        sizes,
        kinds,
        label,
    }))
}

/// One echo run of `shape` against server `s` (running as `srv`) with messages drawn from
/// `sizes`: the raw workload for the raw ceiling (`kinds` is then `None`), else WebSocket
/// messages of `kinds`.
pub(super) fn echo_config(
    a: &CompareArgs,
    s: &Server,
    srv: &Instance,
    shape: &Shape,
    sizes: Vec<(usize, u32)>,
    kinds: Option<Vec<(Kind, u32)>>,
) -> EchoConfig {
    EchoConfig {
        mode: if s.raw { Mode::Raw } else { Mode::WebSocket },
        url: srv.url().to_string(),
        connections: shape.connections,
        sizes,
        kinds: kinds.unwrap_or_else(|| vec![(Kind::Binary, 1)]),
        pipeline: shape.pipeline,
        rate: None,
        warmup: a.warmup,
        duration: a.duration,
        connect_rate: 10_000.0,
        max_pending: 128,
        source_ips: 0,
        server_pid: srv.pid(),
        send_timer: true,
        progress: !a.quiet,
        wire: Default::default(),
    }
}
