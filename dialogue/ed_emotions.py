"""EmpatheticDialogues' 32 emotions on the six labels: the mapping lives in :mod:`perception.ed_emotions`
(the text-emotion model is trained on it); the reply model's data and benchmark read it from here too."""

from perception.ed_emotions import ED_EMOTIONS, map_emotion

__all__ = ["ED_EMOTIONS", "map_emotion"]
