//! The control plane: what is deployed and how to change it while traffic
//! flows. Deployment records and their persistence, the admin API and its
//! client, the watch of a directory, the built-in services deployed at
//! start, and the credentials the gateway checks.

pub mod access;
pub mod admin;
pub mod admin_hosts;
pub mod admin_token;
pub mod builtin;
pub mod client;
pub mod console;
pub mod deployments;
pub mod dev;
pub mod login;
pub mod table;
pub mod watch;
