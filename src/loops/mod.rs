//! The control loops: the [`reconciler`] turns desired state plus observed instances into
//! running instances and the edge's route table, and the [`autoscaler`] decides how many
//! instances each environment runs. They act on the [`Platform`](crate::platform::Platform)
//! and the store, never through the service layer.

pub mod autoscaler;
pub mod health;
pub mod reconciler;
pub mod shared;
pub mod usage;
mod wake;
