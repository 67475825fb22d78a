//! Which network addresses Latchkey believes and which it may call.
//!
//! Two policies live here because both are about addresses an operator names in CIDR
//! notation:
//! - [`DeviceNetworks`] (`LATCHKEY_DEVICE_NETWORKS`): the only ranges an outbound call to an
//!   operator-supplied address (a Shelly device's LAN URL) may reach. An admin who types a
//!   URL must not be able to make the server fetch a cloud metadata endpoint or a service
//!   on its own loopback (server-side request forgery). Link-local and metadata addresses
//!   are refused whatever is configured; loopback only when a configured range names it.
//! - [`TrustedProxies`] (`LATCHKEY_TRUSTED_PROXIES`): whose `X-Forwarded-For` / `Forwarded`
//!   header names the client. Behind a TLS proxy every TCP peer is the proxy; believing the
//!   header from anyone else would let a client pick its own address (and dodge limits).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use axum::http::HeaderMap;

/// An address range, `10.0.0.0/8` or `fd00::/8`; a bare address is a single host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, canonical(address)) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match value.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (value, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{value:?} is not an address or CIDR range"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("{value:?}: the prefix length must be 0 to {bits}"))?,
        };
        Ok(Cidr {
            network: canonical(network),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is the IPv4 address it maps.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A comma-separated list of CIDR ranges.
pub fn parse_cidrs(value: &str) -> Result<Vec<Cidr>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(Cidr::from_str)
        .collect()
}

/// Where outbound calls to operator-supplied device addresses may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNetworks {
    allowed: Vec<Cidr>,
}

/// The private ranges of RFC 1918 and RFC 4193: where LAN devices live.
pub const DEFAULT_DEVICE_NETWORKS: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7";

impl Default for DeviceNetworks {
    fn default() -> Self {
        DeviceNetworks {
            allowed: parse_cidrs(DEFAULT_DEVICE_NETWORKS).unwrap_or_default(),
        }
    }
}

impl DeviceNetworks {
    pub fn new(allowed: Vec<Cidr>) -> Self {
        DeviceNetworks { allowed }
    }

    /// `Ok` when a device may be called at `address`; otherwise why not, in words an
    /// operator can act on.
    pub fn check(&self, address: IpAddr) -> Result<(), String> {
        let address = canonical(address);
        if let Some(reason) = never_callable(address) {
            return Err(format!(
                "{address} is {reason}; device calls never go there whatever \
                 LATCHKEY_DEVICE_NETWORKS says"
            ));
        }
        let allowed = self.allowed.iter().any(|range| range.contains(address));
        if allowed {
            return Ok(());
        }
        let configured = self
            .allowed
            .iter()
            .map(Cidr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Err(format!(
            "{address} is outside the device networks ({configured}); add its range to \
             LATCHKEY_DEVICE_NETWORKS if the device really lives there"
        ))
    }
}

/// Addresses no configuration may open: link-local (where cloud metadata services
/// answer, e.g. 169.254.169.254), the unspecified address, multicast and broadcast.
fn never_callable(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => {
            if v4.is_link_local() {
                Some("a link-local address (cloud metadata services live there)")
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() {
                Some("not a device address")
            } else if v4 == Ipv4Addr::new(100, 100, 100, 200) {
                Some("a cloud metadata address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            let aws_metadata = v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
            if link_local {
                Some("a link-local address")
            } else if aws_metadata {
                Some("a cloud metadata address")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a device address")
            } else {
                None
            }
        }
    }
}

/// The proxies whose forwarding headers name the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<Cidr>,
}

/// How many forwarding hops we walk back through at most: a header longer than this is
/// not from a deployment we know, and walking it costs time per request.
const FORWARDED_HOPS_MAX: usize = 20;

impl TrustedProxies {
    pub fn new(ranges: Vec<Cidr>) -> Self {
        TrustedProxies { ranges }
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(address))
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy; then the
    /// right-most address of the forwarding chain that is not itself a trusted proxy
    /// (entries to its left were written by the client and prove nothing).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers);
        let mut client = peer;
        for hop in chain.into_iter().rev().take(FORWARDED_HOPS_MAX) {
            client = canonical(hop);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// The addresses of `Forwarded: for=…` (RFC 7239), else of `X-Forwarded-For`, left to
/// right; entries that are not addresses (`unknown`, obfuscated names) are skipped.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let forwarded: Vec<IpAddr> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.eq_ignore_ascii_case("for")
                    .then(|| parse_forwarded_node(value))
                    .flatten()
            })
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect()
}

/// `192.0.2.1`, `"192.0.2.1:4711"`, `"[2001:db8::1]:4711"`.
fn parse_forwarded_node(value: &str) -> Option<IpAddr> {
    let value = value.trim().trim_matches('"');
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    value
        .parse()
        .ok()
        .or_else(|| value.rsplit_once(':')?.0.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(value: &str) -> IpAddr {
        value.parse().unwrap()
    }

    #[test]
    fn ranges_contain_what_their_prefix_says() {
        let range: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(range.contains(ip("10.1.255.3")));
        assert!(!range.contains(ip("10.2.0.1")));
        assert!(range.contains(ip("::ffff:10.1.0.9")));
        let everything: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("fd00::/8".parse::<Cidr>().unwrap().contains(ip("fd12::1")));
    }

    #[test]
    fn device_networks_refuse_loopback_and_metadata_by_default() {
        let networks = DeviceNetworks::default();
        assert!(networks.check(ip("192.168.1.50")).is_ok());
        assert!(networks.check(ip("127.0.0.1")).is_err());
        assert!(networks.check(ip("169.254.169.254")).is_err());
        assert!(networks.check(ip("8.8.8.8")).is_err());
        let with_loopback = DeviceNetworks::new(parse_cidrs("127.0.0.0/8").unwrap());
        assert!(with_loopback.check(ip("127.0.0.1")).is_ok());
        let everything = DeviceNetworks::new(parse_cidrs("0.0.0.0/0").unwrap());
        assert!(everything.check(ip("169.254.169.254")).is_err());
    }

    #[test]
    fn forwarded_addresses_count_only_through_a_trusted_proxy() {
        let proxies = TrustedProxies::new(parse_cidrs("10.0.0.0/8").unwrap());
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        assert_eq!(
            proxies.client_address(ip("10.0.0.2"), &headers),
            ip("203.0.113.7")
        );
        assert_eq!(
            proxies.client_address(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
        let mut forwarded = HeaderMap::new();
        forwarded.insert(
            "forwarded",
            "for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.9"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            proxies.client_address(ip("10.0.0.2"), &forwarded),
            ip("2001:db8::1")
        );
    }
}
