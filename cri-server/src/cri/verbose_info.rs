//! The `info` of verbose PodSandboxStatus and ContainerStatus: what `crictl inspect[p]` shows
//! under `info`, in the shape containerd gives it (so `--template '{{.info.pid}}'` and
//! `jq .info.runtimeSpec` scripts carry over). Each value is a JSON document.

use crate::container::ContainerRecord;
use crate::pod::SandboxRecord;
use serde_json::{json, Value};
use std::collections::HashMap;

fn one(doc: Value) -> HashMap<String, String> {
    HashMap::from([("info".to_string(), doc.to_string())])
}

/// `runtime_spec`: the container's OCI config as written to its bundle, if still there.
pub fn container(c: &ContainerRecord, runtime_spec: Option<Value>) -> HashMap<String, String> {
    one(json!({
        "sandboxID": c.pod_id,
        "pid": c.pid,
        "image": c.image_id,
        "snapshotKey": c.id,
        "snapshotter": "overlayfs",
        "runtimeType": "io.containerd.crisp.v2",
        "config": c.config,
        "runtimeSpec": runtime_spec.unwrap_or(Value::Null),
    }))
}

pub fn pod(p: &SandboxRecord) -> HashMap<String, String> {
    let namespaces: Vec<Value> = [
        ("network", &p.netns),
        ("ipc", &p.ipcns),
        ("uts", &p.utsns),
        ("pid", &p.pidns),
        ("user", &p.userns),
    ]
    .into_iter()
    .filter_map(|(typ, path)| {
        path.as_ref()
            .map(|path| json!({ "type": typ, "path": path }))
    })
    .collect();
    one(json!({
        "pid": p.pause_pid,
        "runtimeHandler": p.runtime_handler,
        "cgroupParent": p.cgroup_parent,
        "ips": p.ips,
        "config": p.config,
        "runtimeSpec": { "linux": { "namespaces": namespaces } },
    }))
}
