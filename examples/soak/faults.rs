//! The fault schedule: one fault at a time, the next starting 20-60 s
//! (`--fault-every`) after the previous one started and at least 5 s after
//! it healed, drawn from a seeded generator so that a run can be repeated.
//! The seven kinds are taken in a shuffled cycle, so a short run meets most
//! of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::lab::Lab;
use crate::world::{FaultRecord, World};

#[derive(Debug, Clone, Copy)]
enum Kind {
    KillBackend,
    KillNode,
    Partition,
    Reload,
    RotateCert,
    Drain,
    GossipLoss,
}

const KINDS: [Kind; 7] =
    [Kind::KillBackend, Kind::KillNode, Kind::Partition, Kind::Reload, Kind::RotateCert, Kind::Drain, Kind::GossipLoss];

pub struct Schedule {
    pub rng: fastrand::Rng,
    /// Seconds between the starts of two faults.
    pub every: (u64, u64),
    /// No fault starts after this (the end of the run minus a settling time).
    pub until: Instant,
}

impl Schedule {
    pub async fn run(mut self, lab: Arc<Lab>, world: Arc<World>, mut stop: watch::Receiver<bool>) {
        let mut cycle: Vec<Kind> = Vec::new();
        // The first fault once every agent has connected.
        let mut next = Instant::now() + Duration::from_secs(20);
        loop {
            let wait = tokio::time::sleep_until(next.into());
            tokio::select! {
                _ = wait => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if cycle.is_empty() {
                cycle = KINDS.to_vec();
                self.rng.shuffle(&mut cycle);
            }
            let kind = cycle.pop().unwrap();
            let started = Instant::now();
            let lasts = Duration::from_secs(self.rng.u64(10..=25));
            if started + lasts + Duration::from_secs(10) > self.until {
                return;
            }
            let record = self.inject(kind, lasts, &lab, &world).await;
            world.fault(record);
            let gap = Duration::from_secs(self.rng.u64(self.every.0..=self.every.1));
            next = (started + gap).max(Instant::now() + Duration::from_secs(5));
        }
    }

    async fn inject(&mut self, kind: Kind, lasts: Duration, lab: &Lab, world: &World) -> FaultRecord {
        let start = Instant::now();
        let (kind_name, target, detail) = match kind {
            Kind::KillBackend => {
                // The active server two times in three: where the agents are.
                let active = if self.rng.u8(..3) < 2 { crate::report::active_backend(lab).await } else { None };
                let b = active.unwrap_or_else(|| self.rng.usize(..lab.backends.len()));
                world.backend_down[b].begin(Instant::now());
                lab.kill_backend(b);
                tokio::time::sleep(lasts).await;
                lab.start_backend(b);
                let up = lab.backend_ready(b).await;
                // Checks need `rise` (2) passes at 1 s to take it back.
                tokio::time::sleep(Duration::from_secs(3)).await;
                world.backend_down[b].end(Instant::now());
                ("kill -9 backend", lab.backends[b].name.clone(), format!("restarted after {lasts:?}, listening: {up}"))
            }
            Kind::KillNode => {
                let n = self.rng.usize(..lab.nodes.len());
                world.node_down[n].begin(Instant::now());
                lab.kill_node(n);
                tokio::time::sleep(lasts).await;
                lab.start_node(n);
                let ready = lab.node_ready(n).await;
                world.node_down[n].end(Instant::now());
                (
                    "kill -9 node",
                    lab.nodes[n].name.clone(),
                    format!("restarted with run after {lasts:?}, ready: {ready}"),
                )
            }
            Kind::Partition => {
                let n = self.rng.usize(..lab.nodes.len());
                let others: Vec<String> =
                    lab.nodes.iter().enumerate().filter(|(i, _)| *i != n).map(|(_, o)| o.gossip.to_string()).collect();
                let rule = format!("partition={}|{}", lab.nodes[n].gossip, others.join(","));
                std::fs::write(&lab.fault_file, &rule).unwrap();
                tokio::time::sleep(lasts).await;
                std::fs::write(&lab.fault_file, "").unwrap();
                ("partition", lab.nodes[n].name.clone(), format!("gossip cut from the others ({rule}), healed"))
            }
            Kind::GossipLoss => {
                let rule = "drop=0.3;delay=50ms+50ms";
                std::fs::write(&lab.fault_file, rule).unwrap();
                tokio::time::sleep(lasts).await;
                std::fs::write(&lab.fault_file, "").unwrap();
                ("gossip loss", "all nodes".into(), format!("{rule}, then cleared"))
            }
            Kind::Reload => {
                let b = self.rng.usize(..lab.backends.len());
                let weight = {
                    let mut w = lab.weights.lock().unwrap();
                    w[b] = if w[b] == 1 { 3 } else { 1 };
                    w[b]
                };
                lab.write_configs();
                for n in 0..lab.nodes.len() {
                    lab.signal_node(n, "HUP");
                }
                tokio::time::sleep(lasts).await;
                (
                    "reload",
                    "all nodes".into(),
                    format!("SIGHUP with api pool weight of {} = {weight}", lab.backends[b].name),
                )
            }
            Kind::RotateCert => {
                let n = self.rng.usize(..lab.nodes.len());
                let pem = lab.nodes[n].rotate_cert();
                world.certs.lock().unwrap().push(pem.clone());
                // Served within seconds (the node watches its files):
                // a client that trusts only the new certificate gets in.
                let deadline = Instant::now() + Duration::from_secs(15);
                let mut served = None;
                while Instant::now() < deadline {
                    if crate::agents::https_get(lab.nodes[n].https, "/", std::slice::from_ref(&pem)).await.is_ok() {
                        served = Some(start.elapsed());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                match served {
                    Some(after) => {
                        tokio::time::sleep(lasts.saturating_sub(after)).await;
                        (
                            "rotate certificate",
                            lab.nodes[n].name.clone(),
                            format!("new certificate served after {after:.1?}"),
                        )
                    }
                    None => {
                        world.violation(
                            "certificates rotate without a restart",
                            format!(
                                "{} still served the old certificate 15 s after the files changed",
                                lab.nodes[n].name
                            ),
                        );
                        ("rotate certificate", lab.nodes[n].name.clone(), "new certificate NOT served".into())
                    }
                }
            }
            Kind::Drain => {
                let n = self.rng.usize(..lab.nodes.len());
                let b = self.rng.usize(..lab.backends.len());
                let name = &lab.backends[b].name;
                let admin = lab.nodes[n].admin;
                world.backend_drained[b].begin(Instant::now());
                let drained =
                    crate::agents::admin_post(admin, &format!("/api/v1/pools/agents/servers/{name}/drain")).await;
                let api = crate::agents::admin_post(admin, &format!("/api/v1/pools/api/servers/{name}/drain")).await;
                tokio::time::sleep(lasts).await;
                let enabled =
                    crate::agents::admin_post(admin, &format!("/api/v1/pools/agents/servers/{name}/enable")).await;
                let api_enabled =
                    crate::agents::admin_post(admin, &format!("/api/v1/pools/api/servers/{name}/enable")).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                world.backend_drained[b].end(Instant::now());
                let ok = |r: &Result<(u16, String), String>| matches!(r, Ok((200, _)));
                if !(ok(&drained) && ok(&api) && ok(&enabled) && ok(&api_enabled)) {
                    world.violation(
                        "the admin API answers",
                        format!(
                            "drain/enable of {name} on {}: {drained:?} {api:?} {enabled:?} {api_enabled:?}",
                            lab.nodes[n].name
                        ),
                    );
                }
                (
                    "drain",
                    format!("{name} on {}", lab.nodes[n].name),
                    "drained through the admin API, then enabled".into(),
                )
            }
        };
        FaultRecord { kind: kind_name, target, start_s: world.secs(start), end_s: world.secs(Instant::now()), detail }
    }
}
