//! The caption templates of the reference trainers (`imagenet_templates_small` for objects,
//! `imagenet_style_templates_small` for styles), in their order, so a template index means the
//! same caption as in diffusers' textual_inversion.py.

/// What the new token stands for: a thing in the photos, or their style.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LearnableProperty {
    Object,
    Style,
}

pub const OBJECT_TEMPLATES: [&str; 27] = [
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
];

pub const STYLE_TEMPLATES: [&str; 19] = [
    "a painting in the style of {}",
    "a rendering in the style of {}",
    "a cropped painting in the style of {}",
    "the painting in the style of {}",
    "a clean painting in the style of {}",
    "a dirty painting in the style of {}",
    "a dark painting in the style of {}",
    "a picture in the style of {}",
    "a cool painting in the style of {}",
    "a close-up painting in the style of {}",
    "a bright painting in the style of {}",
    "a cropped painting in the style of {}",
    "a good painting in the style of {}",
    "a close-up painting in the style of {}",
    "a rendition in the style of {}",
    "a nice painting in the style of {}",
    "a small painting in the style of {}",
    "a weird painting in the style of {}",
    "a large painting in the style of {}",
];

impl LearnableProperty {
    pub fn templates(self) -> &'static [&'static str] {
        match self {
            LearnableProperty::Object => &OBJECT_TEMPLATES,
            LearnableProperty::Style => &STYLE_TEMPLATES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::captions::with_placeholder;

    #[test]
    fn templates_match_the_reference_counts_and_ends() {
        // REFERENCE.md: 27 object templates starting "a photo of a {}", "a rendering of a {}";
        // 19 style templates starting "a painting in the style of {}".
        assert_eq!(OBJECT_TEMPLATES.len(), 27);
        assert_eq!(STYLE_TEMPLATES.len(), 19);
        assert_eq!(
            with_placeholder(LearnableProperty::Object.templates()[1], "<cat-toy>"),
            "a rendering of a <cat-toy>"
        );
        assert_eq!(
            with_placeholder(LearnableProperty::Style.templates()[0], "<s> <s>_1"),
            "a painting in the style of <s> <s>_1"
        );
        let all = OBJECT_TEMPLATES.iter().chain(STYLE_TEMPLATES.iter());
        assert!(all.clone().all(|t| t.matches("{}").count() == 1));
    }
}
