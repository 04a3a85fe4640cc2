//! End-to-end tests: the real `lb` binary, real echo backends and real
//! clients on loopback.

mod support;

mod bodies;
mod check;
mod io;
mod l4;
mod lifecycle;
mod quickstart;
mod reload;
mod routing;
