"""What moderation says in rooms (French by default, English with rooms.language: en)."""

from __future__ import annotations

WARN = {"fr": "{user} : votre message a été retiré ({reason}). Merci de respecter la charte.",
        "en": "{user}: your message was removed ({reason}). Please follow the charter."}
# A warning when the message stays (flood: the sender is muted, nothing is removed).
CAUTION = {"fr": "{user} : attention ({reason}). Merci de respecter la charte.",
           "en": "{user}: careful ({reason}). Please follow the charter."}
MUTED = {"fr": "{user} ne peut plus écrire ici pendant {minutes} min ({reason}).",
         "en": "{user} can't write here for {minutes} min ({reason})."}
WAVE = {"fr": "{user} ne peut plus écrire dans les salons de l'établissement pendant {minutes} min ({reason}).",
        "en": "{user} can't write in the school's rooms for {minutes} min ({reason})."}
REPORT = {"fr": "Signalement : {user} dans « {room} » — règle {protection} ({reason}). Mesures : {actions}.",
          "en": "Report: {user} in “{room}” — rule {protection} ({reason}). Actions: {actions}."}
OUTSIDER = {"fr": "{user} a été retiré(e) de ce salon : {reason}.",
            "en": "{user} was removed from this room: {reason}."}
