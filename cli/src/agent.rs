//! Placeholder for the agent entry point until the real one lands.

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    #[arg(long)]
    pub dev: bool,
}

pub fn run(_: AgentArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
