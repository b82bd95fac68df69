//! Traffic routing: SMI TrafficSplit, HTTPRouteGroup and TCPRoute, and the
//! Gateway API's HTTPRoute and GRPCRoute attached to a Service (GAMMA).
//!
//! The types as written are in [`smi`] and [`gateway`]; [`check`] checks
//! each object alone (the model refuses a bad one and keeps its last good
//! version); [`store`] holds them; [`compute`] turns them into one
//! destination's [`RouteTable`] (plain data, [`table`]); [`eval`] says
//! what a table does with a request; [`wire`] turns a table into the
//! discovery API's `Profile.routes`.
//!
//! # How the tables reach the proxies
//!
//! The model keeps each Service port's routes in their wire form, and
//! recomputes them only for the Services a route object or Service change
//! touches ([`RouteStore::apply`], [`RouteStore::referencing`]): endpoint
//! and pod changes never recompute a table. A destination's view carries
//! the producer routes in its profile and, for each namespace with
//! consumer routes attached, that namespace's profile beside it. The
//! control plane resolves which one a watcher sees from the watch's
//! `context.pod_namespace`, rather than sending every namespace's consumer
//! routes to every proxy: a proxy never receives routes meant for other
//! namespaces (nor has to pick among them), and the cost is bounded, since
//! a destination has one distinct profile per consumer namespace plus the
//! producer one, whatever the number of watchers. The hub encodes each
//! distinct profile's `Snapshot` and `Profile` update once per version
//! (`crate::hub`), so the fan-out still encodes a change once per
//! (destination, view), and a change to one namespace's consumer routes
//! sends nothing to the watchers of the others.
//!
//! # What weft does where the resources leave it open
//!
//! **Which routes apply to a Service port.** A Gateway API route attaches
//! with a `parentRef` of `group: ""` (or `core`) and `kind: Service`; its
//! `port` (if set) must be the port's number and its `sectionName` (if set)
//! the port's name. Other parentRefs (a Gateway) are left to gateways. A
//! route in the Service's namespace is a *producer* route, for every
//! client; a route in another namespace is a *consumer* route, for clients
//! in that namespace only, and those clients use their namespace's
//! consumer routes *instead of* the producer routes or split (GEP-1294).
//!
//! **HTTPRoute/GRPCRoute and TrafficSplit on one Service port.** The
//! Gateway API route wins (as in Linkerd): while a producer route is
//! attached to the port, no TrafficSplit of that apex is in force there,
//! and each such split is reported ("not in force on web:80: HTTPRoute
//! shop/web is attached there…"). Consumer routes do not displace a split
//! for other clients. With no producer route, the split in force is the
//! producer set.
//!
//! **Two TrafficSplits for one apex.** The oldest by
//! `metadata.creationTimestamp` is in force, ties (and objects without one,
//! as the files source gives them, which count as newest) broken by name;
//! every other split of that apex is reported and does nothing.
//!
//! **Overlapping Gateway API routes.** All the rules of the routes that
//! apply are merged and their matches ordered as the spec says: an Exact
//! path first (longer first), then a RegularExpression path (the spec
//! leaves its place to the implementation: weft puts it after Exact and
//! before every PathPrefix, longer pattern first), then PathPrefix (longer
//! first), then a match with a method, then more header matches, then more
//! query-parameter matches; ties go to the oldest route, then
//! `namespace/name` in alphabetical order, then the first rule and match
//! in list order. For GRPCRoute: an Exact service (longer first) before a
//! regex one before none, the same for the method, then more headers. A
//! gRPC request (`content-type: application/grpc…`) is matched against the
//! GRPCRoute rules when any is attached, else against the HTTPRoute rules;
//! other requests against the HTTPRoute rules. A request that no rule
//! matches gets 404.
//!
//! **Backends.** A TrafficSplit's backends are Services in its namespace
//! on the apex's port number (the spec); one without that port, or that
//! does not exist, gets no traffic and its share goes to the others (the
//! split is reported). A split never resolves a backend through that
//! backend's own split or routes: a backend is its Service's endpoints.
//! The apex among its own backends means the apex's own endpoints. A
//! split that references HTTPRouteGroups splits the requests that match
//! any of their matches (a group's headers ANDed, its matches ORed, the
//! `pathRegex` anchored at the start of the path, header regexes at both
//! ends) and sends the rest to the apex; one that references only
//! TCPRoutes splits every request and connection on the listed ports (all
//! ports when a TCPRoute lists none) and nothing on the others; one
//! without `matches` splits everything. A reference to a group or TCPRoute
//! that does not exist matches nothing, and is reported.
//!
//! A Gateway API backendRef needs a `port`; a backendRef that names a kind
//! other than Service, a Service that does not exist or a port it does not
//! have keeps its weight and its share gets 500 (the spec). Weight 0 gets
//! no traffic. A rule without backendRefs (and no redirect) sends to the
//! parent Service itself. When no backend of a rule can take traffic
//! (all invalid, or every weight 0) its requests get 500; a backend
//! without ready endpoints, 503.
//!
//! **Bad input.** A route object that breaks the spec's schema or limits
//! (16 rules, 64 matches per rule and 128 per route, 16 backendRefs, 16
//! filters, 16 headers or query parameters per match, 32 parentRefs,
//! weights 0-1,000,000), has a regex that does not compile (or compiles
//! to over 1 MiB), a negative weight, an unknown `matches.kind`, a
//! Service listed twice among one split's backends, a filter weft does
//! not implement (ExtensionRef, CORS) or two exclusive settings,
//! is refused whole with a reason naming the field, logged and counted
//! (`weft_control_source_errors_total`), and its last good version stays
//! in force. Problems only the model sees ([`Problem`]) leave the object in
//! the model and are logged with the object and the reason once, when a
//! change makes them appear (`weft_control_route_problems_total`).
//!
//! Timeouts (`timeouts.request`, `timeouts.backendRequest`, `0s` turning
//! one off) and the experimental `retry` (`codes` 400-599, `attempts`,
//! `backoff`) of a rule are carried as they are; the route object's own
//! `weft.dev/retry-*`/`weft.dev/timeout` annotations are carried beside
//! them (a rule's fields win where both speak).

pub mod check;
pub mod compute;
pub mod eval;
pub mod gateway;
pub mod smi;
pub mod store;
pub mod table;
#[cfg(test)]
mod tests;
pub mod wire;

pub use store::{ObjectKind, RouteObject, RouteStore};
pub use table::*;
