//! Gateway and route lifecycle: changes to Gateways, Listeners and routes
//! while lb runs, and the status they produce.
