"""The 40 CelebA attribute names, in the order of CelebA's `list_attr_celeba.txt`."""

from __future__ import annotations

ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)

# The editor shows these first; the rest sit under "more".
FEATURED: tuple[str, ...] = (
    "Smiling", "Male", "Eyeglasses", "Young", "Blond_Hair", "Black_Hair", "Bangs",
    "Mouth_Slightly_Open", "Heavy_Makeup", "Wearing_Hat", "Mustache", "Pale_Skin",
)


def attribute_index(name: str) -> int:
    """Position of `name` in ATTRIBUTES; a ValueError listing the valid names otherwise."""
    try:
        return ATTRIBUTES.index(name)
    except ValueError:
        raise ValueError(
            f"unknown attribute {name!r}; expected one of: {', '.join(ATTRIBUTES)}"
        ) from None
