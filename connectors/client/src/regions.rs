//! Which region a request goes to: the one serving its subject's jurisdiction. Each region is
//! a Kafka cluster of its own; a region that does not serve the subject refuses the request
//! and keeps nothing of it, so the client routes before it produces.

use pavilion_schemas::jurisdiction_served;

use crate::ClientError;

/// The regions a relying party sends to, each with what the caller needs to reach it (its
/// Kafka settings, for `T`).
#[derive(Debug, Clone)]
pub struct RegionRoutes<T> {
    regions: Vec<(String, Vec<String>, T)>,
}

impl<T> Default for RegionRoutes<T> {
    fn default() -> Self {
        RegionRoutes {
            regions: Vec::new(),
        }
    }
}

impl<T> RegionRoutes<T> {
    /// Adds region `name`, serving `jurisdictions` (ISO 3166 codes), reached through `target`.
    pub fn add(&mut self, name: &str, jurisdictions: Vec<String>, target: T) {
        self.regions.push((name.to_owned(), jurisdictions, target));
    }

    /// The region serving `jurisdiction` (a subdivision such as `US-CA` goes where its
    /// country does), and how to reach it; an error naming what each region serves if none
    /// does.
    pub fn route(&self, jurisdiction: &str) -> Result<(&str, &T), ClientError> {
        self.regions
            .iter()
            .find(|(_, served, _)| jurisdiction_served(served, jurisdiction))
            .map(|(name, _, target)| (name.as_str(), target))
            .ok_or_else(|| ClientError::NoRegion {
                jurisdiction: jurisdiction.to_owned(),
                regions: self
                    .regions
                    .iter()
                    .map(|(name, served, _)| format!("{name}: {}", served.join(",")))
                    .collect::<Vec<_>>()
                    .join("; "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_goes_to_the_region_of_its_jurisdiction() {
        let mut routes = RegionRoutes::default();
        routes.add("eu", vec!["DE".into(), "FR".into()], 29092);
        routes.add("us", vec!["US".into()], 30092);
        assert_eq!(routes.route("DE").unwrap(), ("eu", &29092));
        assert_eq!(routes.route("US-CA").unwrap(), ("us", &30092));
        assert_eq!(
            routes.route("GB").unwrap_err().to_string(),
            "no region serves subjects of jurisdiction GB (eu: DE,FR; us: US): the request is not sent"
        );
    }
}
