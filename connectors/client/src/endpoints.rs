//! Where a provider's evaluation service answers: one or more endpoints, each in a zone of a
//! region, as its registry record lists them, and which of them a call may use.
//!
//! The record's `endpoints` map (role → URL) holds `oprf`, the primary endpoint, in the
//! provider's `region` (the only key a client before several endpoints reads), and
//! `oprf@<zone>` for each further one. A zone's region is the part of its label before the
//! first `-`: `eu-a` and `eu-b` are zones of region `eu`. The map is this module's format:
//! [`registry_endpoints`] writes it (`pavilion provider onboard --oprf-url`) and
//! [`ProviderEndpoint::of`] reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use pavilion_provider::oprf::ELEMENT_LEN;
use pavilion_schemas::{Provider, ProviderState};

/// The registry key of a provider's primary evaluation endpoint.
pub const PRIMARY_KEY: &str = "oprf";
/// The prefix of the registry key of a further endpoint: `oprf@<zone>`.
pub const ZONE_KEY_PREFIX: &str = "oprf@";

/// One evaluation endpoint of a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Zone label (`eu-b`); the provider's region for the primary endpoint.
    pub zone: String,
    /// The region the endpoint is in: the zone's label up to its first `-`.
    pub region: String,
    /// Base URL of the service, without a trailing `/`.
    pub url: String,
}

impl Endpoint {
    /// An endpoint in `zone` (its region is the label up to the first `-`).
    pub fn in_zone(zone: &str, url: &str) -> Self {
        Endpoint {
            zone: zone.to_owned(),
            region: region_of(zone).to_owned(),
            url: url.trim_end_matches('/').to_owned(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (zone {})", self.url, self.zone)
    }
}

/// The region of a zone label: its part before the first `-`.
pub fn region_of(zone: &str) -> &str {
    zone.split_once('-').map_or(zone, |(region, _)| region)
}

/// Where and how to reach one provider, from its registry record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEndpoint {
    /// Provider id.
    pub provider_id: String,
    /// Its evaluation endpoints: the primary first, then the others by zone label. Never
    /// empty, no URL twice.
    pub endpoints: Vec<Endpoint>,
    /// Its registered OPRF public key.
    pub public_key: [u8; ELEMENT_LEN],
}

impl ProviderEndpoint {
    /// A provider with one endpoint, in zone and region `default` (reached when the caller
    /// allows every region, as [`OprfClient::tokens`](crate::OprfClient::tokens) does).
    pub fn single(provider_id: &str, url: &str, public_key: [u8; ELEMENT_LEN]) -> Self {
        ProviderEndpoint {
            provider_id: provider_id.to_owned(),
            endpoints: vec![Endpoint::in_zone("default", url)],
            public_key,
        }
    }

    /// The endpoint of an active provider that can answer `claim`, if it is one.
    pub fn for_claim(provider: &Provider, claim: &str) -> Option<Self> {
        (provider.state == ProviderState::Active && provider.claims.iter().any(|c| c == claim))
            .then(|| Self::of(provider))
            .flatten()
    }

    /// The endpoints of a registered provider, if it has an OPRF service and a valid key.
    pub fn of(provider: &Provider) -> Option<Self> {
        let endpoints = endpoints_of(&provider.region, &provider.endpoints);
        (!endpoints.is_empty()).then_some(())?;
        Some(ProviderEndpoint {
            provider_id: provider.provider_id.clone(),
            endpoints,
            public_key: provider.oprf_public_key.as_slice().try_into().ok()?,
        })
    }

    /// The endpoints `residency` allows, in order.
    pub fn allowed<'a>(&'a self, residency: &'a Residency) -> impl Iterator<Item = &'a Endpoint> {
        self.endpoints
            .iter()
            .filter(|e| residency.allows(&e.region))
    }
}

/// The evaluation endpoints in a registry record's map: `oprf` (in `region`) first, then
/// each `oprf@<zone>` with a valid zone label, by label; other roles, invalid labels and a
/// URL listed twice are left out.
pub fn endpoints_of(region: &str, map: &BTreeMap<String, String>) -> Vec<Endpoint> {
    let primary = map.get(PRIMARY_KEY).map(|url| Endpoint {
        zone: region.to_owned(),
        region: region.to_owned(),
        url: url.trim_end_matches('/').to_owned(),
    });
    let zoned = map.iter().filter_map(|(key, url)| {
        let zone = key.strip_prefix(ZONE_KEY_PREFIX)?;
        check_zone(zone).ok()?;
        Some(Endpoint::in_zone(zone, url))
    });
    let mut seen = BTreeSet::new();
    primary
        .into_iter()
        .chain(zoned)
        .filter(|e| seen.insert(e.url.clone()))
        .collect()
}

/// The regions a call may send blinded elements to (data residency): endpoints elsewhere
/// are never called, not even probed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Residency {
    /// Every region.
    #[default]
    Anywhere,
    /// Only these regions.
    Regions(BTreeSet<String>),
}

impl Residency {
    /// Only `regions`; every region when there is none.
    pub fn regions<S: Into<String>>(regions: impl IntoIterator<Item = S>) -> Self {
        let regions: BTreeSet<String> = regions.into_iter().map(Into::into).collect();
        if regions.is_empty() {
            Residency::Anywhere
        } else {
            Residency::Regions(regions)
        }
    }

    /// Whether an endpoint in `region` may be called.
    pub fn allows(&self, region: &str) -> bool {
        match self {
            Residency::Anywhere => true,
            Residency::Regions(regions) => regions.contains(region),
        }
    }
}

impl fmt::Display for Residency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Residency::Anywhere => f.write_str("any region"),
            Residency::Regions(regions) => {
                let list: Vec<&str> = regions.iter().map(String::as_str).collect();
                write!(f, "region {}", list.join(", "))
            }
        }
    }
}

/// One `--oprf-url` of `pavilion provider onboard`: `URL` (the primary endpoint, in the
/// provider's region) or `ZONE=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OprfUrl {
    /// The zone; `None` for the primary.
    pub zone: Option<String>,
    /// Base URL, without a trailing `/`.
    pub url: String,
}

impl FromStr for OprfUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (zone, url) = if text.starts_with("http://") || text.starts_with("https://") {
            (None, text)
        } else {
            let (zone, url) = text.split_once('=').ok_or_else(|| {
                format!("`{text}` is neither a URL (http:// or https://) nor ZONE=URL")
            })?;
            check_zone(zone)?;
            (Some(zone.to_owned()), url)
        };
        check_url(url)?;
        Ok(OprfUrl {
            zone,
            url: url.trim_end_matches('/').to_owned(),
        })
    }
}

/// A zone label: lowercase letters, digits and `-`, starting with a letter and not ending
/// with `-`, at most 32 characters; its region is the part before the first `-`.
fn check_zone(zone: &str) -> Result<(), String> {
    let ok = !zone.is_empty()
        && zone.len() <= 32
        && zone.starts_with(|c: char| c.is_ascii_lowercase())
        && !zone.ends_with('-')
        && zone
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "zone `{zone}` must be 1-32 lowercase letters, digits or `-`, start with a letter \
             and not end with `-` (e.g. eu-b: zone b of region eu)"
        ))
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("`{url}` names no host"));
    }
    if url.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(format!(
            "`{url}` must be a base URL: no whitespace, query or fragment (the client appends /v1/oprf/...)"
        ));
    }
    Ok(())
}

/// The registry record's `endpoints` map for a provider in `region` with these
/// `--oprf-url`s: exactly one without a zone (the primary, `oprf`), zones and URLs each at
/// most once. Every error is reported, one a line.
pub fn registry_endpoints(
    region: &str,
    urls: &[OprfUrl],
) -> Result<BTreeMap<String, String>, String> {
    let mut errors = Vec::new();
    let primaries: Vec<&str> = urls
        .iter()
        .filter(|u| u.zone.is_none())
        .map(|u| u.url.as_str())
        .collect();
    match primaries.len() {
        1 => {}
        0 => errors.push(format!(
            "one --oprf-url must be a plain URL, without ZONE=: the primary endpoint, in the \
             provider's region `{region}` (registry key `oprf`, the one every client reads)"
        )),
        _ => errors.push(format!(
            "{} --oprf-url values without a zone ({}); only the primary has none: give the \
             others as ZONE=URL (e.g. {region}-b=URL)",
            primaries.len(),
            primaries.join(", ")
        )),
    }
    let mut map = BTreeMap::new();
    let (mut zones, mut seen_urls) = (BTreeSet::new(), BTreeSet::new());
    for u in urls {
        if !seen_urls.insert(u.url.as_str()) {
            errors.push(format!("{} is given twice", u.url));
        }
        match &u.zone {
            None => {
                map.insert(PRIMARY_KEY.to_owned(), u.url.clone());
            }
            Some(zone) if zone == region => errors.push(format!(
                "zone `{zone}` is the primary endpoint's label (the provider's region); name \
                 the zone, e.g. {region}-b"
            )),
            Some(zone) if !zones.insert(zone.as_str()) => {
                errors.push(format!("zone `{zone}` is given twice"))
            }
            Some(zone) => {
                map.insert(format!("{ZONE_KEY_PREFIX}{zone}"), u.url.clone());
            }
        }
    }
    if errors.is_empty() {
        Ok(map)
    } else {
        Err(errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OprfUrl, String> {
        text.parse()
    }

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn urls_and_zoned_urls_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse("https://a.example:8700/").unwrap(),
            OprfUrl {
                zone: None,
                url: "https://a.example:8700".into()
            }
        );
        assert_eq!(
            parse("eu-b=http://10.0.0.2:8700").unwrap(),
            OprfUrl {
                zone: Some("eu-b".into()),
                url: "http://10.0.0.2:8700".into()
            }
        );
        for (text, says) in [
            ("a.example:8700", "neither a URL"),
            ("EU-b=http://x", "lowercase"),
            ("eu-=http://x", "not end with"),
            ("=http://x", "zone ``"),
            ("eu-b=ftp://x", "not an http:// or https:// URL"),
            ("eu-b=http://", "names no host"),
            ("http://:80", "names no host"),
            ("http://x/?a=b", "no whitespace, query"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn the_registry_map_has_one_primary_and_each_zone_and_url_once() {
        let urls = |texts: &[&str]| texts.iter().map(|t| parse(t).unwrap()).collect::<Vec<_>>();
        assert_eq!(
            registry_endpoints("eu", &urls(&["http://a", "eu-b=http://b", "us-a=http://c"]))
                .unwrap(),
            map(&[
                ("oprf", "http://a"),
                ("oprf@eu-b", "http://b"),
                ("oprf@us-a", "http://c")
            ])
        );
        let e = registry_endpoints("eu", &urls(&["eu-b=http://b"])).unwrap_err();
        assert!(e.contains("one --oprf-url must be a plain URL"), "{e}");
        let e = registry_endpoints(
            "eu",
            &urls(&[
                "http://a",
                "http://b",
                "eu=http://c",
                "eu-b=http://a",
                "eu-b=http://d",
            ]),
        )
        .unwrap_err();
        assert_eq!(
            e.lines().collect::<Vec<_>>(),
            [
                "2 --oprf-url values without a zone (http://a, http://b); only the primary has none: give the others as ZONE=URL (e.g. eu-b=URL)",
                "zone `eu` is the primary endpoint's label (the provider's region); name the zone, e.g. eu-b",
                "http://a is given twice",
                "zone `eu-b` is given twice",
            ]
        );
    }

    #[test]
    fn endpoints_are_read_primary_first_with_their_regions() {
        let read = endpoints_of(
            "eu",
            &map(&[
                ("oprf@us-a", "http://c/"),
                ("oprf", "http://a"),
                ("oprf@eu-b", "http://b"),
                ("oprf@Bad", "http://d"),
                ("oprf@eu-c", "http://a"),
                ("status", "http://e"),
            ]),
        );
        let seen: Vec<(&str, &str, &str)> = read
            .iter()
            .map(|e| (e.zone.as_str(), e.region.as_str(), e.url.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("eu", "eu", "http://a"),
                ("eu-b", "eu", "http://b"),
                ("us-a", "us", "http://c"),
            ]
        );
        let eu = Residency::regions(["eu"]);
        let provider = ProviderEndpoint {
            provider_id: "bank".into(),
            endpoints: read,
            public_key: [0; ELEMENT_LEN],
        };
        assert_eq!(provider.allowed(&eu).count(), 2);
        assert_eq!(provider.allowed(&Residency::regions::<&str>([])).count(), 3);
    }
}
