//! berth: a self-hostable, agent-native hosting control plane.
//!
//! Rooms, from the outside in: adapters ([`mcp`], [`api`], [`cli`]) translate requests into
//! calls on the [`service`] layer, which holds every business rule. The service keeps
//! desired state in the [`store`], hands long work to the [`jobs`] queue, whose deploy job
//! is in [`deploy`] (source → build → start → activate). Running instances live in
//! [`runtime`], and the control [`loops`] turn desired state plus observed instances into
//! the edge proxy's route table (`berth-edge`), running as many instances as the
//! autoscaler asks for. [`platform`] is the assembly every room below the service shares;
//! nothing below the service imports it.

pub mod acme;
pub mod api;
pub mod auth;
pub mod backup;
pub mod build_cache;
pub mod build_gate;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod deploy;
pub mod dns;
pub mod error;
pub mod events;
pub mod geoip;
pub mod git_http;
pub mod github;
pub mod jobs;
pub mod loops;
pub mod mcp;
pub mod model;
pub mod oauth;
pub mod otlp;
pub mod patterns;
pub mod platform;
pub mod prometheus;
pub mod replicas;
pub mod runtime;
pub mod server;
pub mod service;
pub mod smtp;
pub mod source;
pub mod store;
pub mod throttle;
pub mod ui;
pub mod util;
