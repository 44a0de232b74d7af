"""What moderation says in rooms (French by default, English with rooms.language: en)."""

from __future__ import annotations

from bridge.policy.engine import REACTION
from bridge.policy.shown_state import MEMBER

WARN = {"fr": "{user} : votre message a été retiré ({reason}). Merci de respecter la charte.",
        "en": "{user}: your message was removed ({reason}). Please follow the charter."}
WARN_REACTION = {"fr": "{user} : votre réaction a été retirée ({reason}). Merci de respecter la charte.",
                 "en": "{user}: your reaction was removed ({reason}). Please follow the charter."}
WARN_MEMBER = {"fr": "{user} : votre nom affiché dans ce salon (ou le motif donné) a été retiré ({reason}). "
                     "Merci de respecter la charte.",
               "en": "{user}: your display name in this room (or the reason you gave) was removed ({reason}). "
                     "Please follow the charter."}
WARN_ROOM = {"fr": "{user} : le nom ou le sujet du salon que vous avez écrit a été retiré ({reason}). "
                   "Merci de respecter la charte.",
             "en": "{user}: the room name or topic you wrote was removed ({reason}). Please follow the charter."}
WARN_UNREADABLE = {"fr": "{user} : votre message chiffré n'a pas pu être lu par la modération de l'ENT : votre "
                         "application n'a pas partagé sa clé avec l'ENT. Il a été retiré. Renvoyez-le ; si cela "
                         "se reproduit, mettez votre application à jour ou autorisez l'envoi aux sessions non "
                         "vérifiées.",
                   "en": "{user}: your encrypted message could not be read by the ENT's moderation: your app did "
                         "not share its key with the ENT. It was removed. Send it again; if this happens again, "
                         "update your app or allow sending to unverified sessions."}
# What a warning says was removed, by event type (a message otherwise).
WARN_OF = {REACTION: WARN_REACTION, MEMBER: WARN_MEMBER, "m.room.name": WARN_ROOM,
           "m.room.topic": WARN_ROOM, "m.room.encrypted": WARN_UNREADABLE}
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
# Messages sent while the bridge was stopped or behind, that it could not read back.
UNREAD = {"fr": "Des messages de « {room} » n'ont pas été vérifiés par la modération ({reason}) : "
                "merci de relire ce salon.",
          "en": "Messages in “{room}” were not checked by moderation ({reason}): please read this room."}
UNREAD_WHY = {"fr": {"too_long": "plus de {read} messages envoyés pendant une interruption du pont",
                     "not_read": "le serveur n'a pas rendu les messages envoyés pendant une interruption du pont"},
              "en": {"too_long": "over {read} messages sent while the bridge was down",
                     "not_read": "the server did not return the messages sent while the bridge was down"}}
