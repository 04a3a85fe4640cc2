//! End-to-end tests: the real `lb` binary, real echo backends and real
//! clients on loopback.

mod support;

mod bodies;
mod check;
mod endpoints;
mod io;
mod l4;
mod lifecycle;
mod metrics;
mod quickstart;
mod reload;
mod routing;
mod udp;
