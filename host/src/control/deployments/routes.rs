//! The live route table: the configured routes (to components deployed now,
//! and to HTTP upstreams), and those given at deploy (`?route=`); and the
//! rules a new route must pass.

use pitstop_gateway::{RouteTable, prefix_matches};

use super::Deployments;
use super::records::ComponentRecord;
use crate::runtime::DeployError;
use crate::upstream::NAME_PREFIX;

impl Deployments {
    /// The live route table: the configured routes and those given at
    /// deploy, for components that are deployed now.
    pub fn route_table(&self) -> RouteTable {
        let registry = &*self.registry;
        let mut pairs: Vec<(String, String)> = Vec::new();
        let records = self.records().unwrap_or_default();
        let dynamic =
            records.iter().flat_map(|r| r.routes.iter().map(|p| (p.clone(), r.name.clone())));
        for (prefix, component) in self.static_routes.iter().cloned().chain(dynamic) {
            // An upstream's routes are always live: it is not deployed here.
            let live = registry.get(&component).is_some() || component.starts_with(NAME_PREFIX);
            if live && !pairs.iter().any(|(p, _)| *p == prefix) {
                pairs.push((prefix, component));
            }
        }
        RouteTable::new(pairs).unwrap_or_else(|error| {
            // check_routes keeps this from happening; serve nothing new rather than panic.
            tracing::error!(%error, "route table is inconsistent; keeping the previous one");
            (*self.gateway.routes()).clone()
        })
    }

    /// The live routes leading to `name`.
    pub fn routes_of(&self, name: &str) -> Vec<String> {
        routes_in(&self.route_table(), name)
    }

    pub(super) fn refresh_routes(&self) {
        self.gateway.set_routes(self.route_table());
    }

    /// Routes of `record` must be well-formed, not belong to another
    /// component, and not lie inside another component's route (`/users/x`
    /// would take part of the user service over) unless the config's route
    /// table gives that prefix to this component.
    pub(super) fn check_routes(&self, record: &ComponentRecord) -> Result<(), DeployError> {
        RouteTable::new(record.routes.iter().map(|p| (p.clone(), record.name.clone())))
            .map_err(|e| DeployError::MalformedRoute(e.to_string()))?;
        let others = self.records()?;
        let claimed = self.static_routes.iter().cloned().chain(
            others.iter().flat_map(|r| r.routes.iter().map(|p| (p.clone(), r.name.clone()))),
        );
        for (prefix, owner) in claimed {
            if owner == record.name {
                continue;
            }
            if record.routes.contains(&prefix) {
                return Err(DeployError::Route(format!(
                    "route {prefix} belongs to component {owner}"
                )));
            }
            let configured = |route: &String| {
                self.static_routes.iter().any(|(p, c)| p == route && *c == record.name)
            };
            // A component may take over part of an upstream's paths: that
            // is how a monolith is replaced one prefix at a time.
            if owner.starts_with(NAME_PREFIX) {
                continue;
            }
            if let Some(route) = record
                .routes
                .iter()
                .find(|route| prefix_matches(&prefix, route) && !configured(route))
            {
                return Err(DeployError::Route(format!(
                    "route {route} lies inside the route {prefix} of component {owner}; \
                     give it to {} in the config's route table to allow that",
                    record.name
                )));
            }
        }
        Ok(())
    }
}

/// The prefixes of `table` leading to `component`.
pub(super) fn routes_in(table: &RouteTable, component: &str) -> Vec<String> {
    table.routes().iter().filter(|r| r.component == component).map(|r| r.prefix.clone()).collect()
}
