//! The ASAP client side: pool element (PE) and pool user (PU) as a sans-I/O core with a small driver.
//! Not built yet: this crate is a placeholder until the endpoint issue lands.
