pub mod integrations;
pub mod sim;
