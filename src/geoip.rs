//! Client countries from a GeoIP database (`--geoip-db`, MaxMind DB format: GeoLite2 or
//! GeoIP2 Country or City). The file is read whole into memory when the server starts; the
//! edge looks up each client connection's peer address once (see
//! [`berth_edge::Edge::set_country_lookup`]) and reads only `country.iso_code`, without
//! allocating.

use std::net::IpAddr;
use std::path::Path;

use berth_edge::CountryCode;

/// An open GeoIP database.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl GeoIp {
    /// Opens the database at `path`, refusing a file that is not a MaxMind DB.
    pub fn open(path: &Path) -> Result<GeoIp, String> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| {
            format!(
                "--geoip-db (BERTH_GEOIP_DB) {} cannot be read as a MaxMind DB ({e}); give a GeoLite2 or GeoIP2 \
                 Country or City .mmdb file, or leave it unset to count no countries",
                path.display()
            )
        })?;
        Ok(GeoIp { reader })
    }

    /// The database's type (`GeoLite2-Country`, …), for the start-up log.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The country of `ip`, if the database has one for it (an IPv6 address in an
    /// IPv4-only database has none).
    pub fn country(&self, ip: IpAddr) -> Option<CountryCode> {
        let found = self.reader.lookup(ip).ok()?;
        let code: &str = found
            .decode_path(&maxminddb::path!["country", "iso_code"])
            .ok()
            .flatten()?;
        CountryCode::new(code)
    }
}
