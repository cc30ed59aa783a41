pub mod cluster;
pub mod netns;
