//! Linux process facts: another process's CPU ticks (`/proc/PID/stat`), its CPU time in
//! nanoseconds (`/proc/PID/task/*/schedstat`) and resident memory (`/proc/PID/status`), this process's CPU (`getrusage`), the file-descriptor limit, and
//! CPU affinity.

use std::io;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime in clock ticks, parsed from the contents of a `/proc/PID/stat` file.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// utime + stime of process `pid` in clock ticks.
pub fn process_cpu_ticks(pid: i32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_ticks(&s)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparseable /proc/PID/stat"))
}

/// Time on CPU in nanoseconds, parsed from a `/proc/PID/task/TID/schedstat` file (its first
/// field).
pub fn parse_schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// Time on CPU of all threads of process `pid`, user and kernel, in nanoseconds. Unlike
/// [`process_cpu_ticks`] (10 ms ticks) it is fine enough for a window of a few hundred
/// milliseconds, such as opening 10,000 connections.
pub fn process_cpu_ns(pid: i32) -> io::Result<u64> {
    let mut total = 0;
    for thread in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended between the listing and the read no longer counts.
        let Ok(s) = std::fs::read_to_string(thread?.path().join("schedstat")) else {
            continue;
        };
        total += parse_schedstat_ns(&s)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparseable schedstat"))?;
    }
    Ok(total)
}

/// VmRSS in bytes, parsed from the contents of a `/proc/PID/status` file.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident memory of process `pid` in bytes.
pub fn process_rss(pid: i32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vmrss(&s).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS"))
}

/// CPU seconds (user + system) used by this process so far.
pub fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur as u64;
            }
        }
        rl.rlim_cur as u64
    }
}

/// Number of CPUs online (not limited by this process's affinity).
pub fn cpu_count() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

/// Busy clock ticks of the whole machine (user, nice, system, irq, softirq, steal), parsed from
/// the first line of `/proc/stat`.
pub fn parse_proc_stat_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    // user nice system idle iowait irq softirq steal ...
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    Some(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// Busy clock ticks of the whole machine so far.
pub fn machine_busy_ticks() -> Option<u64> {
    parse_proc_stat_busy(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Pins the calling thread (the whole generator: it is single-threaded) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds are checked by the libc macro helper.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn parses_stat_with_odd_comm() {
        let s = "1234 (my (odd) srv) S 1 1234 1234 0 -1 4194560 100 0 0 0 731 269 0 0 20 0 1 0 \
                 5 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_stat_ticks(s), Some(1000));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn parses_machine_stat() {
        let s = "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_proc_stat_busy(s), Some(100 + 5 + 50 + 3 + 2 + 1));
        assert_eq!(parse_proc_stat_busy("intr 1\n"), None);
    }

    #[test]
    fn parses_vmrss() {
        let s = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1536 kB\nThreads:\t1\n";
        assert_eq!(parse_vmrss(s), Some(1536 * 1024));
        assert_eq!(parse_vmrss("Name: x\n"), None);
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id() as i32;
        assert!(process_rss(pid).expect("rss") > 0);
        assert!(process_cpu_ticks(pid).is_ok());
        // Enough work to be on the clock for more than the scheduler's first slice.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(0u64);
        }
        assert!(process_cpu_ns(pid).expect("schedstat") > 0);
        assert_eq!(parse_schedstat_ns("123456 789 10\n"), Some(123456));
        assert_eq!(parse_schedstat_ns(""), None);
        assert!(clock_ticks_per_sec() > 0);
        assert!(own_cpu_secs() >= 0.0);
    }
}
