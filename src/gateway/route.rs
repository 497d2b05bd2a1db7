//! Choosing the backend from the login name: by domain, or by the SDPS
//! forms `user@NAME` / `user+NAME` that name a backend. No I/O.

use std::collections::{HashMap, HashSet};

use crate::config::{Config, DEFAULT_ROUTE};

pub(crate) struct Router {
    /// Lower-cased domain -> (backend, strip the domain).
    domains: HashMap<String, (String, bool)>,
    sdps: bool,
    backends: HashSet<String>,
}

/// Where a login goes and as whom.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Route<'a> {
    pub(crate) backend: &'a str,
    pub(crate) user: String,
}

impl Router {
    pub(crate) fn new(config: &Config) -> Router {
        Router {
            domains: config
                .routing
                .domains
                .iter()
                .map(|(d, r)| (d.to_lowercase(), (r.upstream.clone(), r.strip_domain)))
                .collect(),
            sdps: config.routing.sdps,
            backends: config.upstreams.keys().cloned().collect(),
        }
    }

    pub(crate) fn route<'a>(&'a self, login: &str) -> Route<'a> {
        if let Some((user, domain)) = login.rsplit_once('@') {
            if let Some((backend, strip)) = self.domains.get(&domain.to_lowercase()) {
                return Route {
                    backend,
                    user: if *strip {
                        user.to_string()
                    } else {
                        login.to_string()
                    },
                };
            }
        }
        if self.sdps {
            let split = login.rfind(['@', '+']);
            if let Some(i) = split.filter(|&i| i > 0) {
                if let Some(backend) = self.backends.get(&login[i + 1..]) {
                    return Route {
                        backend,
                        user: login[..i].to_string(),
                    };
                }
            }
        }
        Route {
            backend: DEFAULT_ROUTE,
            user: login.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Router;
    use crate::config::Config;

    fn router(sdps: bool) -> Router {
        let yaml = format!(
            "listeners:\n  - address: \"127.0.0.1:0\"\nupstream:\n  address: \"a:143\"\n\
             upstreams:\n  east:\n    address: \"b:143\"\n  west:\n    address: \"c:143\"\n\
             routing:\n  sdps: {sdps}\n  domains:\n    Example.ORG:\n      upstream: east\n      strip_domain: true\n\
             \x20   keep.example:\n      upstream: west\n"
        );
        Router::new(&Config::parse(&yaml).unwrap())
    }

    #[test]
    fn logins_find_their_backend_and_user() {
        let (plain, sdps) = (router(false), router(true));
        // (SDPS on, login, backend, upstream user)
        let cases = [
            (false, "ann@example.org", "east", "ann"),
            (false, "Bob@EXAMPLE.org", "east", "Bob"),
            (false, "cy@keep.example", "west", "cy@keep.example"),
            (false, "dee@other.example", "default", "dee@other.example"),
            (false, "plain", "default", "plain"),
            (false, "ed+east", "default", "ed+east"),
            (true, "ed+east", "east", "ed"),
            (true, "ed@west", "west", "ed"),
            (true, "a+b@west", "west", "a+b"),
            (true, "ed+nowhere", "default", "ed+nowhere"),
            (true, "+east", "default", "+east"),
            (true, "ann@example.org", "east", "ann"), // domains before SDPS
        ];
        for (on, login, backend, user) in cases {
            let route = if on { &sdps } else { &plain }.route(login);
            assert_eq!(
                (route.backend, route.user.as_str()),
                (backend, user),
                "{login}"
            );
        }
    }

    #[test]
    fn unknown_backend_in_a_domain_route_is_a_config_error() {
        let yaml = "listeners:\n  - address: \"127.0.0.1:0\"\nupstream:\n  address: \"a:143\"\n\
                    routing:\n  domains:\n    x.org:\n      upstream: nope\n";
        let e = Config::parse(yaml).unwrap_err();
        assert!(e.contains("routing.domains.x.org.upstream"), "{e}");
    }
}
