//! TEMPORARY stub until wip/tags lands.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagSelection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub semver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<NewestTags>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 256)))]
    pub exclude: Vec<String>,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewestTags {
    pub count: u32,
    #[serde(default)]
    pub sort_by: TagSort,
}
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum TagSort {
    #[default]
    Semver,
    Alphabetical,
    Numerical,
}
pub struct TagSelectionOutcome {
    pub selected: Vec<String>,
}
#[derive(Debug)]
pub struct TagSelectionError(pub String);
impl std::fmt::Display for TagSelectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
pub fn select_tags(
    _s: &TagSelection,
    tags: &[String],
    _cap: usize,
) -> Result<TagSelectionOutcome, TagSelectionError> {
    Ok(TagSelectionOutcome {
        selected: tags.to_vec(),
    })
}
pub fn validate(_s: &TagSelection) -> Result<(), TagSelectionError> {
    Ok(())
}
