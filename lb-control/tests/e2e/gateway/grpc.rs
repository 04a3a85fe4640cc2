//! GRPCRoute through the running binary with a tonic client: method and
//! header matching, Listener hostname matching by :authority, weights.
