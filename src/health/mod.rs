//! Server health. This version holds passive health (failures seen by the
//! proxy); active probes join it in their own issue.

pub mod passive;

pub use passive::PassiveHealth;
