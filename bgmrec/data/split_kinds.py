"""The names of the split kinds (bgmrec.data.splits), apart from the code that makes them so the CLI's help can
list them without importing numpy or pandas."""

SEEN_UNSEEN = "seen-unseen"
SPLIT_KINDS = ("weak", "strong", SEEN_UNSEEN)
