//! The Task API's `Stats`: the container's cgroup figures in containerd's metrics messages
//! (`io.containerd.cgroups.v1.Metrics` on a cgroup v1 host, `…v2.Metrics` on v2), which is what
//! `ctr task metrics` and containerd's CRI plugin decode. crispd reads cgroups itself; this
//! serves other Task API clients.

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use libcgroups::common::{create_cgroup_manager, CgroupManager, CgroupSetup};
use libcgroups::stats::Stats;
use std::path::Path;

pub fn metrics(cgroup: &Path, id: &str) -> Result<Any, String> {
    let manager = create_cgroup_manager(crate::cgroup::config(cgroup, id))
        .map_err(|e| format!("opening cgroup {}: {e}", cgroup.display()))?;
    let stats = manager
        .stats()
        .map_err(|e| format!("reading cgroup {}: {e}", cgroup.display()))?;
    let unified = matches!(
        libcgroups::common::get_cgroup_setup(),
        Ok(CgroupSetup::Unified)
    );
    let (type_url, value) = if unified {
        (
            "io.containerd.cgroups.v2.Metrics",
            to_v2(&stats).write_to_bytes(),
        )
    } else {
        (
            "io.containerd.cgroups.v1.Metrics",
            to_v1(&stats).write_to_bytes(),
        )
    };
    let mut any = Any::new();
    any.type_url = type_url.into();
    any.value = value.map_err(|e| format!("encoding metrics: {e}"))?;
    Ok(any)
}

fn to_v1(s: &Stats) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    let mut pids = v1::PidsStat::new();
    pids.current = s.pids.current;
    pids.limit = s.pids.limit;
    m.pids = MessageField::some(pids);
    let mut usage = v1::CPUUsage::new();
    usage.total = s.cpu.usage.usage_total;
    usage.user = s.cpu.usage.usage_user;
    usage.kernel = s.cpu.usage.usage_kernel;
    usage.per_cpu = s.cpu.usage.per_core_usage_total.clone();
    let mut throttle = v1::Throttle::new();
    throttle.periods = s.cpu.throttling.periods;
    throttle.throttled_periods = s.cpu.throttling.throttled_periods;
    throttle.throttled_time = s.cpu.throttling.throttled_time;
    let mut cpu = v1::CPUStat::new();
    cpu.usage = MessageField::some(usage);
    cpu.throttling = MessageField::some(throttle);
    m.cpu = MessageField::some(cpu);
    let entry = |d: &libcgroups::stats::MemoryData| {
        let mut e = v1::MemoryEntry::new();
        e.usage = d.usage;
        e.max = d.max_usage;
        e.limit = d.limit;
        e.failcnt = d.fail_count;
        e
    };
    let stat = |k: &str| s.memory.stats.get(k).copied().unwrap_or(0);
    let mut mem = v1::MemoryStat::new();
    mem.cache = s.memory.cache;
    mem.rss = stat("rss");
    mem.mapped_file = stat("mapped_file");
    mem.pg_fault = stat("pgfault");
    mem.pg_maj_fault = stat("pgmajfault");
    mem.inactive_file = stat("inactive_file");
    mem.active_file = stat("active_file");
    mem.usage = MessageField::some(entry(&s.memory.memory));
    mem.swap = MessageField::some(entry(&s.memory.memswap));
    mem.kernel = MessageField::some(entry(&s.memory.kernel));
    m.memory = MessageField::some(mem);
    m
}

fn to_v2(s: &Stats) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    let mut pids = v2::PidsStat::new();
    pids.current = s.pids.current;
    pids.limit = s.pids.limit;
    m.pids = MessageField::some(pids);
    // On v2, libcgroups passes cpu.stat's microsecond figures through unchanged.
    let mut cpu = v2::CPUStat::new();
    cpu.usage_usec = s.cpu.usage.usage_total;
    cpu.user_usec = s.cpu.usage.usage_user;
    cpu.system_usec = s.cpu.usage.usage_kernel;
    cpu.nr_periods = s.cpu.throttling.periods;
    cpu.nr_throttled = s.cpu.throttling.throttled_periods;
    cpu.throttled_usec = s.cpu.throttling.throttled_time;
    m.cpu = MessageField::some(cpu);
    let stat = |k: &str| s.memory.stats.get(k).copied().unwrap_or(0);
    let mut mem = v2::MemoryStat::new();
    mem.anon = stat("anon");
    mem.file = stat("file");
    mem.pgfault = stat("pgfault");
    mem.pgmajfault = stat("pgmajfault");
    mem.usage = s.memory.memory.usage;
    mem.usage_limit = s.memory.memory.limit;
    mem.swap_usage = s.memory.memswap.usage;
    mem.swap_limit = s.memory.memswap.limit;
    m.memory = MessageField::some(mem);
    m
}
