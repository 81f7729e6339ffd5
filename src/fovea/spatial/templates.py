"""Question and answer phrasings per question type (at least 10 questions and 5 answers each).

Placeholders: {A} {B} {C} object phrases ("the red box"), {X} a rounded value with its unit,
{N} a list of candidate objects ("the apple, the cup or the brick"), {names} a plural noun,
{K} a count. Relations are phrased as (frames x relation words) so each type gets >= 10 distinct
questions; `question_templates(type)` lists them and is what the tests count.
"""

from __future__ import annotations

from itertools import product

# ---- qualitative predicates and choices --------------------------------------------------------------
# relation -> (predicate phrasings "A is ___ B", choice phrasings "which is ___", same-answer phrase)
RELATIONS = {
    "left": (["to the left of", "left of", "on the left side of", "further left than"],
             ["more to the left", "further to the left", "on the left"],
             "at about the same left-right position"),
    "right": (["to the right of", "right of", "on the right side of", "further right than"],
              ["more to the right", "further to the right", "on the right"],
              "at about the same left-right position"),
    "above": (["above", "higher up than", "positioned higher than", "at a greater height than"],
              ["higher up", "positioned higher", "at a greater height"],
              "at about the same height"),
    "below": (["below", "lower down than", "positioned lower than", "at a smaller height than"],
              ["lower down", "positioned lower", "closer to the floor"],
              "at about the same height"),
    "behind": (["behind", "further back than", "farther from the camera than", "further away than"],
               ["further back", "farther from the camera", "further away from the viewer"],
               "at about the same distance from the camera"),
    "front": (["in front of", "closer to the camera than", "nearer to the viewer than", "further forward than"],
              ["closer to the camera", "more in front", "nearer to the viewer"],
              "at about the same distance from the camera"),
    "wider": (["wider than", "broader than", "larger in width than", "more wide than"],
              ["wider", "broader", "larger in width"], "about the same width"),
    "thinner": (["thinner than", "narrower than", "less wide than", "slimmer than"],
                ["thinner", "narrower", "less wide"], "about the same width"),
    "bigger": (["bigger than", "larger than", "of greater volume than", "more voluminous than"],
               ["bigger", "larger", "of greater volume"], "about the same size"),
    "smaller": (["smaller than", "less bulky than", "of smaller volume than", "more compact than"],
                ["smaller", "less bulky", "of smaller volume"], "about the same size"),
    "taller": (["taller than", "higher than", "of greater height than", "more tall than"],
               ["taller", "higher", "of greater height"], "about the same height"),
    "shorter": (["shorter than", "lower than", "less tall than", "of smaller height than"],
                ["shorter", "lower", "less tall"], "about the same height"),
}

PRED_FRAMES = ["Is {A} {R} {B}?", "Would you say {A} is {R} {B}?", "Is it true that {A} is {R} {B}?",
               "From this viewpoint, is {A} {R} {B}?", "Can you confirm whether {A} is {R} {B}?"]
PRED_YES = ["Yes, {A} is {R} {B}.", "Yes.", "Correct, {A} is {R} {B}.", "Yes, it is.", "That's right: {A} is {R} {B}."]
PRED_NO = ["No, {A} is not {R} {B}.", "No.", "Incorrect, {A} is not {R} {B}.", "No, it is not.",
           "Not really: {A} is not {R} {B}."]
SAME = ["They are {S}.", "Neither: {A} and {B} are {S}.", "It's too close to call; they are {S}.",
        "About the same: {A} and {B} are {S}.", "Roughly equal: both are {S}."]
CHOICE_FRAMES = ["Which is {R}, {A} or {B}?", "Between {A} and {B}, which one is {R}?",
                 "Of {A} and {B}, which is {R}?", "Which object is {R}: {A} or {B}?",
                 "Tell me which is {R}, {A} or {B}."]
CHOICE_ANSWERS = ["{W} is {R}.", "{W}.", "It's {W}.", "{W} is the one that is {R}.", "The answer is {W}."]

# ---- quantities ----------------------------------------------------------------------------------
QUANTITY_Q = {
    "centre_distance": [
        "How far apart are the centres of {A} and {B}?", "What is the distance between {A} and {B}, centre to centre?",
        "How far is {A} from {B}, measured between their centres?", "Centre to centre, how far is {A} from {B}?",
        "Measure the distance from the centre of {A} to the centre of {B}.",
        "How much distance separates the centres of {A} and {B}?", "What is the centre distance of {A} and {B}?",
        "Give the distance between the middle of {A} and the middle of {B}.",
        "How far is the middle of {A} from the middle of {B}?", "Tell me how far apart {A} and {B} are, centre to centre."],
    "gap_distance": [
        "How big is the gap between {A} and {B}?", "What is the shortest distance between {A} and {B}?",
        "How far apart are the closest points of {A} and {B}?", "How much space is there between {A} and {B}?",
        "What is the clearance between {A} and {B}?", "Measure the gap separating {A} from {B}.",
        "How far is the nearest surface of {A} from the nearest surface of {B}?",
        "What is the minimum distance between {A} and {B}?", "How wide is the space between {A} and {B}?",
        "Tell me the gap between {A} and {B}."],
    "vertical_distance": [
        "How far apart are {A} and {B} vertically?", "What is the vertical distance between {A} and {B}?",
        "How much higher or lower is {A} than {B}?", "What is the height difference between the centres of {A} and {B}?",
        "Vertically, how far is {A} from {B}?", "How big is the vertical offset between {A} and {B}?",
        "Measure the vertical separation of {A} and {B}.", "By how much do {A} and {B} differ in height above the floor?",
        "What is the up-down distance between {A} and {B}?", "Tell me the vertical gap between the middles of {A} and {B}."],
    "horizontal_distance": [
        "How far apart are {A} and {B} horizontally?", "What is the horizontal distance between {A} and {B}?",
        "Along the floor, how far is {A} from {B}?", "Ignoring height, how far apart are {A} and {B}?",
        "What is the distance between {A} and {B} measured parallel to the floor?",
        "Horizontally, how far is {A} from {B}?", "How far is {A} from {B} as seen from above?",
        "Measure the horizontal separation of {A} and {B}.", "What is the floor distance between {A} and {B}?",
        "Tell me the horizontal distance from {A} to {B}."],
    "width": [
        "How wide is {A}?", "What is the width of {A}?", "How wide does {A} measure from left to right?",
        "Measure the width of {A}.", "How broad is {A}?", "What is {A}'s width?",
        "From left to right, how wide is {A}?", "Tell me the width of {A}.", "How much space does {A} take up side to side?",
        "What is the left-to-right extent of {A}?"],
    "height": [
        "How tall is {A}?", "What is the height of {A}?", "How high is {A} from bottom to top?",
        "Measure the height of {A}.", "What is {A}'s height?", "From bottom to top, how tall is {A}?",
        "Tell me how tall {A} is.", "How high does {A} stand?", "What is the vertical size of {A}?",
        "What is the bottom-to-top extent of {A}?"],
    "depth_extent": [
        "How deep is {A}?", "What is the depth of {A}, front to back?", "How long is {A} from front to back?",
        "Measure the front-to-back extent of {A}.", "What is {A}'s depth?", "From front to back, how deep is {A}?",
        "Tell me the depth of {A}.", "How far does {A} extend away from the camera?",
        "What is the front-to-back size of {A}?", "How much room does {A} take up from front to back?"],
    "distance_from_camera": [
        "How far is {A} from the camera?", "What is the distance from the camera to {A}?",
        "How far away from the viewer is {A}?", "How far is {A} from where the photo was taken?",
        "Measure the distance between the camera and {A}.", "What is {A}'s distance from the camera?",
        "How far do I have to reach from the camera to {A}?", "Tell me how far {A} is from the camera.",
        "From the camera, how far away is {A}?", "What is the range to {A}?"],
    "elevation": [
        "How high above the floor is {A}?", "At what height above the supporting surface is the middle of {A}?",
        "What is the elevation of {A} above the floor?", "How far above the floor is the centre of {A}?",
        "Measure how high {A} sits above the surface.", "What is the height of {A}'s centre above the floor?",
        "How high up is {A}?", "Tell me the elevation of {A}.", "How far above the table or floor is {A}?",
        "What is {A}'s height above the ground?"],
    "footprint_area": [
        "How much floor area does {A} cover?", "What is the footprint area of {A}?",
        "How large is the area {A} occupies on the surface?", "What area does {A} take up on the floor?",
        "Measure the footprint of {A}.", "How big is {A}'s footprint?", "Tell me the area under {A}.",
        "How much surface does {A} stand on?", "What is the ground area of {A}?",
        "How much of the surface is covered by {A}?"],
    "direction_clock": [
        "If you stand at {A} facing away from the camera, at what clock position is {B}?",
        "Standing at {A} and looking away from the camera, where is {B}, as a clock direction?",
        "From {A}, in which clock direction is {B} (12 o'clock = away from the camera)?",
        "At how many o'clock is {B} from {A}?", "What clock direction points from {A} to {B}?",
        "Seen from {A}, at what o'clock is {B}?", "Where will you find {B} if you are at {A}? Answer as a clock position.",
        "Give the clock direction of {B} relative to {A}.", "From {A}, which hour on a clock points to {B}?",
        "If you are at {A}, at what o'clock is {B}?"],
}
QUANTITY_A = {
    "centre_distance": ["{A} and {B} are {X} apart, centre to centre.", "About {X}.", "Their centres are {X} apart.",
                        "The centre distance is {X}.", "Roughly {X} between their centres."],
    "gap_distance": ["The gap is {X}.", "About {X}.", "There are {X} between {A} and {B}.",
                     "Their closest points are {X} apart.", "Roughly {X} of clearance."],
    "vertical_distance": ["{A} and {B} are {X} apart vertically.", "About {X}.", "The vertical distance is {X}.",
                          "Their heights differ by {X}.", "Roughly {X} vertically."],
    "horizontal_distance": ["{A} and {B} are {X} apart horizontally.", "About {X}.", "The horizontal distance is {X}.",
                            "Along the floor they are {X} apart.", "Roughly {X} horizontally."],
    "width": ["{A} is {X} wide.", "About {X}.", "The width of {A} is {X}.", "It measures {X} across.", "Roughly {X} wide."],
    "height": ["{A} is {X} tall.", "About {X}.", "The height of {A} is {X}.", "It stands {X} high.", "Roughly {X} tall."],
    "depth_extent": ["{A} is {X} deep.", "About {X}.", "The depth of {A} is {X}.", "It extends {X} from front to back.",
                     "Roughly {X} deep."],
    "distance_from_camera": ["{A} is {X} from the camera.", "About {X}.", "The camera is {X} away from {A}.",
                             "It is {X} away.", "Roughly {X}."],
    "elevation": ["The centre of {A} is {X} above the floor.", "About {X}.", "{A} sits {X} high.",
                  "Its elevation is {X}.", "Roughly {X} above the surface."],
    "footprint_area": ["{A} covers {X}.", "About {X}.", "The footprint of {A} is {X}.", "It takes up {X} of surface.",
                       "Roughly {X}."],
    "direction_clock": ["{B} is at {X} from {A}.", "At {X}.", "Around {X}.", "{B} is roughly at {X} from {A}.",
                        "You will find {B} at about {X}."],
}

# ---- the types no open pipeline has ---------------------------------------------------------------
AMONG_Q = {
    "closest_to": ["Which of {N} is closest to {A}?", "Among {N}, which one is nearest to {A}?",
                   "What is closest to {A}: {N}?", "Of {N}, which is the closest to {A}?",
                   "Which object is nearest to {A}, {N}?", "Looking at {N}, which lies closest to {A}?",
                   "Which one of {N} is the least far from {A}?", "Pick the object closest to {A} among {N}.",
                   "Which of these is nearest {A}: {N}?", "From {A}, which of {N} is closest?"],
    "farthest_from": ["Which of {N} is farthest from {A}?", "Among {N}, which one is furthest from {A}?",
                      "What is farthest from {A}: {N}?", "Of {N}, which is the most distant from {A}?",
                      "Which object is furthest away from {A}, {N}?", "Looking at {N}, which lies farthest from {A}?",
                      "Which one of {N} is the most far from {A}?", "Pick the object farthest from {A} among {N}.",
                      "Which of these is furthest from {A}: {N}?", "From {A}, which of {N} is farthest?"],
}
AMONG_A = ["{W}.", "{W} is.", "It's {W}.", "The answer is {W}.", "{W}, by centre distance."]
COUNT_Q = ["How many {names} are there?", "How many {names} can you see?", "Count the {names} in the picture.",
           "What is the number of {names} in the scene?", "How many {names} are in the image?",
           "How many {names} does the scene contain?", "Tell me how many {names} there are.",
           "How many {names} are visible?", "What's the count of {names}?", "Can you count the {names}?"]
COUNT_A = ["There are {K}.", "{K}.", "I count {K}.", "The scene has {K}.", "{K} in total."]
FITS_Q = ["Could {C} fit between {A} and {B}?", "Is there enough room for {C} between {A} and {B}?",
          "Would {C} fit in the gap between {A} and {B}?", "Can {C} be placed between {A} and {B}?",
          "Is the space between {A} and {B} wide enough for {C}?", "Does {C} fit between {A} and {B}?",
          "Would there be room to put {C} between {A} and {B}?", "Is the gap between {A} and {B} big enough for {C}?",
          "Can {C} go between {A} and {B}?", "Will {C} squeeze in between {A} and {B}?"]
FITS_YES = ["Yes, {C} fits between {A} and {B}.", "Yes.", "Yes, there is enough room.",
            "Yes, the gap is wide enough for {C}.", "It fits, yes."]
FITS_NO = ["No, {C} does not fit between {A} and {B}.", "No.", "No, there is not enough room.",
           "No, the gap is too narrow for {C}.", "It would not fit."]
TOP_Q = ["Is {A} on top of {B}?", "Is {A} resting on {B}?", "Does {A} sit on {B}?", "Is {A} placed on {B}?",
         "Is {A} stacked on {B}?", "Is {B} holding up {A}?", "Is {A} lying on top of {B}?",
         "Does {B} support {A}?", "Has {A} been put on {B}?", "Is {A} standing on {B}?"]
TOP_YES = ["Yes, {A} is on top of {B}.", "Yes.", "Yes, it rests on {B}.", "Correct, {A} sits on {B}.", "Yes, it does."]
TOP_NO = ["No, {A} is not on top of {B}.", "No.", "No, it does not rest on {B}.", "No, {A} is not on {B}.",
          "No, it is not."]


def relation_questions(rel: str, choice: bool) -> list[str]:
    """Every question phrasing of a relation ({A}, {B} left to fill)."""
    words = RELATIONS[rel][1 if choice else 0]
    frames = CHOICE_FRAMES if choice else PRED_FRAMES
    return [f.replace("{R}", r) for f, r in product(frames, words)]


def question_templates(qtype: str) -> list[str]:
    """All question phrasings of a type name (see fovea.spatial.definitions.TYPES)."""
    if qtype.endswith("_predicate"):
        return relation_questions(qtype[: -len("_predicate")], False)
    if qtype.endswith("_choice"):
        return relation_questions(qtype[: -len("_choice")], True)
    return {**QUANTITY_Q, **AMONG_Q, "count": COUNT_Q, "fits_between": FITS_Q, "on_top_of": TOP_Q}[qtype]


def answer_templates(qtype: str) -> dict[str, list[str]]:
    """Answer phrasings of a type by outcome ("yes", "no", "same", "choice", "value")."""
    if qtype.endswith("_predicate"):
        return {"yes": PRED_YES, "no": PRED_NO, "same": SAME}
    if qtype.endswith("_choice"):
        return {"choice": CHOICE_ANSWERS, "same": SAME}
    if qtype in QUANTITY_A:
        return {"value": QUANTITY_A[qtype]}
    return {"closest_to": {"choice": AMONG_A}, "farthest_from": {"choice": AMONG_A}, "count": {"value": COUNT_A},
            "fits_between": {"yes": FITS_YES, "no": FITS_NO}, "on_top_of": {"yes": TOP_YES, "no": TOP_NO}}[qtype]
