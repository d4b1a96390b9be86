//! Placeholder for the differential driver.
