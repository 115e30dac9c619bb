"""Deterministic generator for the Agenix sample company, "Halvorsen Industrial Supply GmbH".

The generator writes a fictional mid-market industrial supplier (pumps, valves, compressors, gearboxes,
bearings, seals, sensors and conveyor parts) into a landing folder, in the same shapes the real source
systems deliver: a CRM as SQLite, support tickets as monthly JSONL files, ERP orders as CSV and a
knowledge base of Markdown, HTML and PDF articles. Next to the data it writes the ground truth the rest
of the platform is evaluated against: every planted PII span (``_manifest/pii.jsonl``), every fact a
document states (``_manifest/facts.jsonl``) and, derived from those facts, the golden set of the support-assistant
use case (``_manifest/golden/support-assistant.yaml``): the questions its retrieval smoke test must answer, about
documents that exist for this seed and scale.

Why it is built this way:

* Determinism. The same (scale, seed, as_of) must give the same bytes, so tests, evaluations and demos
  are reproducible. Every random draw comes from a ``random.Random`` instance seeded with a string
  derived from the seed and a stream name (string seeds are hashed with SHA-512 by ``random``, so they
  are stable across processes, unlike ``hash()``). Each dataset has its own stream, so changing how one
  dataset is generated does not reshuffle the others. No global random state, no Faker (its data
  changes between releases): names, streets and cities come from the small lists below. Sets are only
  used for membership tests, never iterated. PDFs get a fixed creation date (``as_of``), which also
  fixes fpdf2's file identifier.
* Everything is relative to ``as_of``: all timestamps fall in the three years before it (strictly
  before ``as_of`` 00:00), so re-running later with the same ``as_of`` gives the same data.
* The ground truth is produced while writing, not reconstructed afterwards: ticket bodies are built
  from templates whose PII placeholders record their exact character offsets, and every fact sentence is
  registered by the code that places it into a document.
* Facts never contradict each other: every fact key (``HX-200.warranty_months``,
  ``policy.returns.DE.return_window_days`` ...) is stated by exactly one document. The catalog grows with
  the scale (numbered models per product family), so even the large scale has a distinct product for
  every manual, troubleshooting guide and installation guide. Filler text never contains numbers.
* The catalog is a prefix-stable function of the seed: product i is the same at every scale.
* Speed: strings are built in memory and every file is written once; nothing is O(n^2).
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import html
import json
import math
import random
import re
import shutil
import sqlite3
import string
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from .paths import sample_golden_set_path

__all__ = [
    "COMPANY",
    "COMPANY_DOMAIN",
    "GENERATED_DIRS",
    "SCALES",
    "Product",
    "Scale",
    "build_catalog",
    "generate_sample_company",
    "golden_set",
    "golden_split",
    "iban_is_valid",
]

COMPANY = "Halvorsen Industrial Supply GmbH"
COMPANY_DOMAIN = "halvorsen-industrial.example"
GENERATED_DIRS = ("crm", "tickets", "erp", "documents", "_manifest")
# The use case whose index the sample's knowledge base feeds (config/rag/support_assistant.yaml): its golden set
# is generated with the data, since which products and document paths exist depends on the seed.
GOLDEN_USE_CASE = "support-assistant"
# Documents per kind the golden set asks about, drawn with the seed: 18 questions, each naming its product.
GOLDEN_PER_KIND = 6
GOLDEN_KINDS = ("guides/", "manuals/", "troubleshooting/")
HISTORY_DAYS = 3 * 365


# ================================================================ scales


@dataclass(frozen=True)
class Scale:
    accounts: int
    contacts: int
    tickets: int
    orders: int
    documents: int
    long_documents: bool


SCALES: dict[str, Scale] = {
    "small": Scale(accounts=20, contacts=60, tickets=200, orders=300, documents=40, long_documents=False),
    "medium": Scale(accounts=200, contacts=800, tickets=5_000, orders=10_000, documents=2_000, long_documents=True),
    "large": Scale(
        accounts=1_000, contacts=5_000, tickets=50_000, orders=100_000, documents=20_000, long_documents=True
    ),
}


@dataclass(frozen=True)
class DocumentPlan:
    policies: int
    manuals: int
    troubleshooting: int
    installation_guides: int
    catalog_size: int


def _plan_documents(n_documents: int) -> DocumentPlan:
    """Split the document count into kinds; one manual, guide and troubleshooting article per product."""
    policies = min(len(POLICY_EDITIONS), max(3, round(n_documents * 0.015)))
    rest = max(0, n_documents - policies)
    per_product = math.ceil(rest / 3)
    troubleshooting = min(per_product, rest - per_product)
    guides = rest - per_product - troubleshooting
    return DocumentPlan(
        policies=policies,
        manuals=per_product,
        troubleshooting=troubleshooting,
        installation_guides=guides,
        catalog_size=max(30, math.ceil(per_product * 1.2)),
    )


# ================================================================ reference lists


@dataclass(frozen=True)
class City:
    name: str
    postal_base: int
    area_code: str
    gb_outward: str = ""


@dataclass(frozen=True)
class Country:
    code: str
    name: str  # as used in running text ("the Netherlands")
    weight: float
    flavour: str
    cities: tuple[City, ...]
    streets: tuple[str, ...]


COUNTRIES: tuple[Country, ...] = (
    Country(
        "DE", "Germany", 35, "de",
        (
            City("Berlin", 10115, "30"), City("Hamburg", 20095, "40"), City("München", 80331, "89"),
            City("Köln", 50667, "221"), City("Frankfurt am Main", 60311, "69"), City("Stuttgart", 70173, "711"),
            City("Düsseldorf", 40213, "211"), City("Leipzig", 4109, "341"), City("Dortmund", 44135, "231"),
            City("Bremen", 28195, "421"), City("Hannover", 30159, "511"), City("Nürnberg", 90402, "911"),
        ),
        (
            "Lindenstraße", "Hauptstraße", "Industriestraße", "Bahnhofstraße", "Schillerstraße", "Mühlenweg",
            "Werkstraße", "Kanalstraße", "Am Hafen", "Gewerbering", "Robert-Bosch-Straße", "Siemensallee",
        ),
    ),
    Country(
        "AT", "Austria", 10, "de",
        (City("Wien", 1010, "1"), City("Graz", 8010, "316"), City("Linz", 4020, "732"), City("Salzburg", 5020, "662")),
        ("Mariahilfer Straße", "Landstraßer Hauptstraße", "Industriezeile", "Gewerbestraße", "Wiener Straße"),
    ),
    Country(
        "NL", "the Netherlands", 12, "nl",
        (
            City("Amsterdam", 1015, "20"), City("Rotterdam", 3011, "10"), City("Eindhoven", 5611, "40"),
            City("Utrecht", 3511, "30"),
        ),
        ("Keizersgracht", "Industrieweg", "Havenstraat", "Stationsplein", "Molenweg", "Kanaalstraat"),
    ),
    Country(
        "DK", "Denmark", 7, "dk",
        (City("København", 1050, ""), City("Aarhus", 8000, ""), City("Odense", 5000, "")),
        ("Vesterbrogade", "Industrivej", "Havnegade", "Nørregade", "Fabriksvej"),
    ),
    Country(
        "SE", "Sweden", 8, "se",
        (City("Stockholm", 11122, "8"), City("Göteborg", 41104, "31"), City("Malmö", 21120, "40")),
        ("Storgatan", "Industrigatan", "Hamngatan", "Verkstadsgatan", "Kungsgatan"),
    ),
    Country(
        "GB", "the United Kingdom", 12, "uk",
        (
            City("London", 0, "20", "EC1A"), City("Manchester", 0, "161", "M2"), City("Birmingham", 0, "121", "B1"),
            City("Leeds", 0, "113", "LS1"), City("Sheffield", 0, "114", "S1"),
        ),
        ("Queen Street", "Station Road", "Mill Lane", "Church Street", "Canal Road", "Foundry Way"),
    ),
    Country(
        "PL", "Poland", 8, "pl",
        (
            City("Warszawa", 950, "22"), City("Kraków", 30001, "12"), City("Poznań", 60101, "61"),
            City("Gdańsk", 80001, "58"),
        ),
        ("Przemysłowa", "Fabryczna", "Kolejowa", "Portowa", "Warsztatowa"),
    ),
    Country(
        "CH", "Switzerland", 8, "de",
        (City("Zürich", 8001, "44"), City("Basel", 4051, "61"), City("Bern", 3011, "31")),
        ("Bahnhofstrasse", "Industriestrasse", "Seestrasse", "Werkstrasse", "Hardturmstrasse"),
    ),
)

FIRST_NAMES: dict[str, tuple[str, ...]] = {
    "de": (
        "Anna", "Lukas", "Julia", "Felix", "Lena", "Jonas", "Sophie", "Maximilian", "Laura", "Tobias", "Katharina",
        "Florian", "Sabine", "Jürgen", "Andreas", "Petra", "Stefan", "Monika", "Markus", "Claudia", "Matthias",
        "Birgit", "Thomas", "Ute", "Michael", "Susanne", "Ralf", "Heike", "Dominik", "Carina", "Jan", "Nina",
        "Sebastian", "Franziska", "Alexander", "Miriam", "Christian", "Johanna", "Daniel", "Verena", "Martin",
        "Simone", "Bernd", "Kerstin", "Philipp", "Theresa", "Wolfgang", "Elisabeth", "Georg", "Hannelore",
    ),
    "nl": ("Daan", "Sanne", "Lieke", "Bram", "Thijs", "Femke", "Joost", "Marloes", "Pieter", "Eva", "Ruben", "Anouk",
           "Sven", "Ilse", "Jeroen", "Maaike", "Koen", "Esther", "Wouter", "Fleur", "Niels", "Iris", "Gijs", "Roos"),
    "dk": ("Mette", "Søren", "Anders", "Sofie", "Henrik", "Freja", "Rasmus", "Camilla", "Mikkel", "Line", "Jesper",
           "Ida", "Morten", "Signe", "Frederik", "Louise", "Kasper", "Tove"),
    "se": ("Lars", "Ingrid", "Karin", "Magnus", "Astrid", "Nils", "Elin", "Oskar", "Linnea", "Björn", "Maja", "Erik",
           "Johan", "Sara", "Fredrik", "Emma", "Per", "Annika"),
    "uk": ("James", "Oliver", "Emily", "Charlotte", "Harry", "George", "Amelia", "Jack", "Grace", "William", "Hannah",
           "Chloe", "Thomas", "Lucy", "Daniel", "Sarah", "Matthew", "Rebecca", "Samuel", "Eleanor", "Joseph", "Alice"),
    "pl": ("Piotr", "Katarzyna", "Tomasz", "Agnieszka", "Paweł", "Marta", "Łukasz", "Magdalena", "Krzysztof", "Zofia",
           "Michał", "Ewa", "Marcin", "Joanna", "Grzegorz", "Aleksandra", "Wojciech", "Małgorzata"),
}
LAST_NAMES: dict[str, tuple[str, ...]] = {
    "de": (
        "Keller", "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Wagner", "Becker", "Hoffmann", "Schäfer",
        "Koch", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Zimmermann", "Braun", "Krüger", "Hartmann",
        "Lange", "Werner", "Krause", "Lehmann", "Köhler", "Brandt", "Vogel", "Friedrich", "Günther", "Huber",
        "Gruber", "Pichler", "Steiner", "Moser", "Hofer", "Bauer", "Frei", "Meier", "Baumann", "Schulz",
        "Hahn", "Schubert", "Jung", "Schwarz", "Sommer", "Winkler", "Lorenz", "Kaiser", "Fuchs", "Peters",
        "Scholz", "Möller", "Weiß", "Jäger", "Berger", "Haas", "Ludwig", "Seidel", "Brunner", "Wimmer",
        "Egger", "Lang", "Kälin", "Ammann", "Gerber",
    ),
    "nl": ("de Vries", "van Dijk", "Bakker", "Jansen", "Visser", "Smit", "Meijer", "de Boer", "Mulder", "van den Berg",
           "Dekker", "Hendriks", "de Jong", "van Leeuwen", "Bos", "Vos", "Peters", "Brouwer", "de Graaf", "Kuipers",
           "Veenstra", "van der Linden", "Schouten", "Willems"),
    "dk": ("Hansen", "Nielsen", "Jensen", "Pedersen", "Andersen", "Larsen", "Sørensen", "Christensen", "Madsen",
           "Kristensen", "Rasmussen", "Jørgensen", "Poulsen", "Thomsen", "Møller", "Mortensen"),
    "se": ("Johansson", "Lindqvist", "Andersson", "Karlsson", "Nilsson", "Eriksson", "Berg", "Lund", "Dahl", "Holm",
           "Sjöberg", "Larsson", "Olsson", "Persson", "Svensson", "Gustafsson", "Lindberg", "Engström"),
    "uk": ("Smith", "Taylor", "Brown", "Wilson", "Davies", "Evans", "Roberts", "Walker", "Wright", "Thompson",
           "Whitfield", "Clarke", "Hughes", "Green", "Hall", "Wood", "Harris", "Lewis", "Jackson", "Turner", "Cooper",
           "Ward", "Morris", "Bennett", "Fletcher", "Marshall"),
    "pl": ("Nowak", "Wójcik", "Kowalczyk", "Mazur", "Krawczyk", "Kaczmarek", "Zając", "Król", "Wieczorek", "Dudek",
           "Pawlak", "Sikora", "Walczak", "Baran", "Szewczyk", "Kubiak", "Michalak", "Wróbel", "Adamczyk", "Sowa"),
}
FLAVOURS = tuple(FIRST_NAMES)

COMPANY_PATTERNS: dict[str, tuple[str, ...]] = {
    "DE": ("{a} Maschinenbau GmbH", "{a} Anlagentechnik GmbH", "{a} & {b} KG", "{a} Verfahrenstechnik GmbH",
           "Stadtwerke {city}", "{a} Lebensmittelwerke GmbH"),
    "AT": ("{a} Anlagenbau GmbH", "{a} & {b} OG", "{a} Papier AG", "{a} Metallwerk GmbH"),
    "CH": ("{a} Fördertechnik AG", "{a} Pharma AG", "{a} & {b} AG", "Wasserversorgung {city}"),
    "NL": ("{a} Procestechniek B.V.", "{a} Installatietechniek B.V.", "{a} Voedingsmiddelen B.V.",
           "Waterbedrijf {city}"),
    "DK": ("{a} Maskinfabrik A/S", "{a} Fødevarer A/S", "{a} & {b} ApS", "{a} Teknik A/S"),
    "SE": ("{a} Industri AB", "{a} Bruk AB", "{a} Verkstäder AB", "{a} & {b} AB", "{a} Processteknik AB"),
    "GB": ("{a} Engineering Ltd", "{a} Process Systems Ltd", "{a} & {b} Ltd", "{a} Water Services Ltd"),
    "PL": ("{a} Technika Sp. z o.o.", "{a} Przemysł S.A.", "{a} Energia Sp. z o.o.", "{a} i {b} Sp. z o.o."),
}
REGION_QUALIFIERS = {
    "de": ("Nord", "Süd", "West", "Ost", "Service"), "nl": ("Noord", "Zuid", "West", "Oost"),
    "dk": ("Nord", "Syd", "Vest", "Øst"), "se": ("Norr", "Syd", "Väst", "Öst"),
    "uk": ("North", "South", "West", "East"),
    "pl": ("Północ", "Południe", "Zachód", "Wschód"),
}
LEGAL_FORMS = ("GmbH", "KG", "OG", "AG", "B.V.", "A/S", "ApS", "AB", "Ltd", "Sp. z o.o.", "S.A.")

INDUSTRIES = (
    "food and beverage", "chemicals", "water utilities", "automotive supplier", "mining", "pulp and paper",
    "pharmaceuticals", "logistics", "energy", "agriculture", "shipbuilding", "metal processing",
)
SEGMENTS = (("enterprise", 15), ("mid_market", 45), ("smb", 40))
SEGMENT_CONTACT_WEIGHT = {"enterprise": 5.0, "mid_market": 2.5, "smb": 1.0}
SEGMENT_ORDER_WEIGHT = {"enterprise": 6.0, "mid_market": 2.5, "smb": 1.0}
SEGMENT_DISCOUNT = {"enterprise": 0.12, "mid_market": 0.07, "smb": 0.0}
JOB_TITLES = (
    "Maintenance Manager", "Plant Engineer", "Purchasing Manager", "Head of Production", "Service Technician",
    "Procurement Specialist", "Operations Manager", "Reliability Engineer", "Technical Buyer", "Facility Manager",
    "Project Engineer", "Quality Manager",
)


@dataclass(frozen=True)
class Employee:
    first: str
    last: str
    role: str
    phone: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def email(self) -> str:
        return f"{_slug_name(self.first)}.{_slug_name(self.last)}@{COMPANY_DOMAIN}"


# Halvorsen staff. Latin-1 only: they appear in PDFs. Their names are never used for CRM contacts.
EMPLOYEES: tuple[Employee, ...] = (
    Employee("Anna", "Keller", "field engineer", "+49 40 5550 1234"),
    Employee("Jonas", "Petersen", "account manager", "+49 40 5550 1240"),
    Employee("Marie", "Lindholm", "account manager", "+49 40 5550 1241"),
    Employee("Henrik", "Dahlberg", "field engineer", "+46 8 555 012 34"),
    Employee("Sophie", "Vermeulen", "field engineer", "+31 20 555 0192"),
    Employee("Oliver", "Grant", "account manager", "+44 20 7946 0321"),
    Employee("Katrin", "Aigner", "service coordinator", "+43 1 5550 417"),
    Employee("Mads", "Kjær", "field engineer", "+45 55 50 12 77"),
    Employee("Tobias", "Reinholt", "product manager", "+49 40 5550 1288"),
    Employee("Lena", "Brandt", "account manager", "+49 40 5550 1200"),
    Employee("Piet", "Zandbergen", "account manager", "+31 20 555 0144"),
    Employee("Greta", "Sørlie", "service coordinator", "+49 40 5550 1266"),
    Employee("Felix", "Oberholzer", "field engineer", "+41 44 555 01 23"),
    Employee("Ingrid", "Solberg", "product manager", "+49 40 5550 1201"),
)
ACCOUNT_MANAGERS = tuple(e for e in EMPLOYEES if e.role == "account manager")
EMPLOYEE_NAMES = frozenset(e.name for e in EMPLOYEES)

UNKNOWN_EMAIL_DOMAINS = ("mailbox.example", "post.example", "inbox.example", "contractor-services.example")

_TRANSLIT = str.maketrans(
    {
        "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "å": "aa", "ø": "oe", "æ": "ae", "é": "e", "è": "e",
        "ł": "l", "ś": "s", "ą": "a", "ę": "e", "ż": "z", "ź": "z", "ć": "c", "ń": "n", "ó": "o",
    }
)


def _slug_name(text: str) -> str:
    """Lower-case ASCII form of a name part for e-mail local parts ("van Dijk" -> "vandijk")."""
    return "".join(ch for ch in text.lower().translate(_TRANSLIT) if ch.isascii() and ch.isalnum())


def _slug(text: str) -> str:
    out: list[str] = []
    for ch in text.lower().translate(_TRANSLIT):
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        elif out and out[-1] != "-":
            out.append("-")
    return "".join(out).strip("-")


# ================================================================ catalog


@dataclass(frozen=True)
class SpecDef:
    """How one specification is phrased: bullet label, question and the sentences that state it."""

    key: str
    label: str
    question: str
    fmt: str
    sentences: tuple[str, ...]


SPEC_DEFS: dict[str, SpecDef] = {
    s.key: s
    for s in (
        SpecDef("max_pressure", "Maximum operating pressure",
                "What is the maximum operating pressure of the {name}?", "{v} bar",
                ("The {sku} is rated for a maximum operating pressure of {value}.",
                 "The maximum operating pressure of the {name} is {value}.")),
        SpecDef("flow_rate", "Rated flow rate", "What is the rated flow rate of the {name}?", "{v} l/min",
                ("At nominal speed the {sku} delivers a flow rate of {value}.",
                 "The rated flow rate of the {name} is {value}.")),
        SpecDef("power", "Rated motor power", "What is the rated motor power of the {name}?", "{v} kW",
                ("The {sku} is driven by a motor with a rated power of {value}.",
                 "The rated motor power of the {name} is {value}.")),
        SpecDef("nominal_size", "Nominal size", "What is the nominal size of the {name}?", "DN {v}",
                ("The {sku} is supplied in nominal size {value}.", "The nominal size of the {name} is {value}.")),
        SpecDef("kv_value", "Flow coefficient (Kv)",
                "What is the flow coefficient (Kv value) of the {name}?", "{v} m³/h",
                ("Fully open, the {sku} has a flow coefficient (Kv) of {value}.",
                 "The Kv value of the {name} is {value}.")),
        SpecDef("free_air_delivery", "Free air delivery",
                "What is the free air delivery of the {name}?", "{v:.1f} m³/min",
                ("At maximum working pressure the {sku} has a free air delivery of {value}.",
                 "The free air delivery of the {name} is {value}.")),
        SpecDef("ratio", "Reduction ratio", "What is the reduction ratio of the {name}?", "{v}:1",
                ("The {sku} has a reduction ratio of {value}.", "The reduction ratio of the {name} is {value}.")),
        SpecDef("rated_torque", "Rated output torque", "What is the rated output torque of the {name}?", "{v} Nm",
                ("The {sku} transmits a rated output torque of {value}.",
                 "The rated output torque of the {name} is {value}.")),
        SpecDef("input_power", "Maximum input power", "What is the maximum input power of the {name}?", "{v} kW",
                ("The {sku} accepts a maximum input power of {value}.",
                 "The maximum input power of the {name} is {value}.")),
        SpecDef("bore_diameter", "Bore diameter", "What is the bore diameter of the {name}?", "{v} mm",
                ("The {sku} has a bore diameter of {value}.", "The bore diameter of the {name} is {value}.")),
        SpecDef("dynamic_load", "Dynamic load rating", "What is the dynamic load rating of the {name}?", "{v:.1f} kN",
                ("The {sku} has a basic dynamic load rating of {value}.",
                 "The dynamic load rating of the {name} is {value}.")),
        SpecDef("limiting_speed", "Limiting speed", "What is the limiting speed of the {name}?", "{v} rpm",
                ("The limiting speed of the {sku} is {value}.",
                 "The {name} must not be operated above its limiting speed of {value}.")),
        SpecDef("shaft_diameter", "Shaft diameter", "What shaft diameter is the {name} designed for?", "{v} mm",
                ("The {sku} is designed for a shaft diameter of {value}.",
                 "The {name} fits a shaft diameter of {value}.")),
        SpecDef("sliding_speed", "Maximum sliding speed",
                "What is the maximum sliding speed of the {name}?", "{v:.1f} m/s",
                ("The {sku} tolerates a maximum sliding speed of {value}.",
                 "The maximum sliding speed of the {name} is {value}.")),
        SpecDef("measuring_range", "Measuring range", "What is the measuring range of the {name}?", "{v}",
                ("The {sku} covers a measuring range of {value}.", "The measuring range of the {name} is {value}.")),
        SpecDef("accuracy", "Accuracy", "What is the accuracy of the {name}?", "±{v} % of span",
                ("The {sku} measures with an accuracy of {value}.", "The accuracy of the {name} is {value}.")),
        SpecDef("ip_rating", "Ingress protection", "What ingress protection rating does the {name} have?", "{v}",
                ("The housing of the {sku} is rated {value}.", "The {name} has ingress protection rating {value}.")),
        SpecDef("load_capacity", "Maximum load capacity", "What is the maximum load capacity of the {name}?", "{v} kg",
                ("The {sku} carries a maximum load of {value}.",
                 "The maximum load capacity of the {name} is {value}.")),
        SpecDef("belt_speed", "Maximum belt speed", "What is the maximum belt speed of the {name}?", "{v:.1f} m/s",
                ("The {sku} is approved for belt speeds of up to {value}.",
                 "The maximum belt speed of the {name} is {value}.")),
        SpecDef("diameter", "Outer diameter", "What is the outer diameter of the {name}?", "{v} mm",
                ("The {sku} has an outer diameter of {value}.", "The outer diameter of the {name} is {value}.")),
        SpecDef("temperature_range", "Operating temperature range",
                "What is the operating temperature range of the {name}?", "{v}",
                ("The {sku} can be operated at temperatures from {value}.",
                 "The permissible operating temperature range of the {name} is {value}.")),
        SpecDef("weight", "Weight", "How much does the {name} weigh?", "{v:.1f} kg",
                ("The {sku} has a net weight of {value}.", "The {name} weighs {value} without packaging.")),
        SpecDef("maintenance_interval", "Maintenance interval",
                "How often does the {name} need scheduled maintenance?", "every {v} operating hours",
                ("The {sku} requires scheduled maintenance {value}.", "Schedule maintenance of the {name} {value}.")),
        SpecDef("warranty_months", "Warranty", "What is the warranty period of the {name}?", "{v} months",
                ("The {sku} is covered by a warranty of {value} from the date of delivery.",
                 "Halvorsen grants a warranty of {value} on the {name}.")),
    )
}

COMMON_SPECS = ("temperature_range", "weight", "maintenance_interval", "warranty_months")
CATEGORY_SPECS: dict[str, tuple[str, ...]] = {
    "pump": ("max_pressure", "flow_rate", "power"),
    "valve": ("max_pressure", "nominal_size", "kv_value"),
    "compressor": ("max_pressure", "free_air_delivery", "power"),
    "gearbox": ("ratio", "rated_torque", "input_power"),
    "bearing": ("bore_diameter", "dynamic_load", "limiting_speed"),
    "seal": ("max_pressure", "shaft_diameter", "sliding_speed"),
    "sensor": ("measuring_range", "accuracy", "ip_rating"),
    "conveyor": ("load_capacity", "belt_speed", "diameter"),
}

MOTOR_SIZES = ("0.37", "0.55", "0.75", "1.1", "1.5", "2.2", "3", "4", "5.5", "7.5", "11", "15", "18.5", "22", "30",
               "37", "45", "55", "75", "90", "110", "132", "160", "200", "250")


def _motors(lo: float, hi: float) -> list[str]:
    return [m for m in MOTOR_SIZES if lo <= float(m) <= hi]


# A range is (lo, hi, step) or a list of choices. Category defaults, overridden per family.
CATEGORY_RANGES: dict[str, dict[str, Any]] = {
    "pump": {"weight": (8, 450, 0.5), "maintenance_interval": (1000, 8000, 250), "warranty_months": [12, 18, 24, 36],
             "temperature_range": ([-20, -10, 0], [60, 80, 90, 110]), "price": (450, 9500), "quantity": (1, 6)},
    "valve": {"max_pressure": ["16", "25", "40", "63", "100"],
              "nominal_size": [15, 20, 25, 32, 40, 50, 65, 80, 100, 125, 150, 200, 250, 300],
              "kv_value": (2, 2500, 1), "weight": (0.5, 320, 0.5), "maintenance_interval": (2000, 16000, 500),
              "warranty_months": [12, 24, 36], "temperature_range": ([-40, -29, -20, -10], [120, 150, 180, 200]),
              "price": (60, 3800), "quantity": (1, 40)},
    "compressor": {"max_pressure": ["7.5", "8", "10", "13"], "free_air_delivery": (0.3, 45.0, 0.1),
                   "power": _motors(2.2, 250), "weight": (60, 3800, 5), "maintenance_interval": (2000, 8000, 500),
                   "warranty_months": [12, 24, 36, 60],
                   "temperature_range": ([0, 2, 5], [40, 45, 46]), "price": (2800, 48000), "quantity": (1, 2)},
    "gearbox": {"ratio": ["5", "7.5", "10", "12.5", "15", "20", "25", "30", "40", "50", "60", "80", "100"],
                "rated_torque": (50, 25000, 10), "input_power": _motors(0.37, 160), "weight": (5, 1800, 0.5),
                "maintenance_interval": (4000, 20000, 1000), "warranty_months": [12, 24, 36],
                "temperature_range": ([-20, -10, 0], [40, 50, 60]), "price": (350, 14000), "quantity": (1, 8)},
    "bearing": {"bore_diameter": (10, 300, 5), "dynamic_load": (5.0, 950.0, 0.1), "limiting_speed": (1200, 22000, 100),
                "weight": (0.2, 45.0, 0.1), "maintenance_interval": (500, 6000, 250), "warranty_months": [12, 24],
                "temperature_range": ([-40, -30, -20], [110, 120, 150]), "price": (6, 650), "quantity": (2, 200)},
    "seal": {"max_pressure": (10, 45, 1), "shaft_diameter": (10, 200, 1), "sliding_speed": (2.0, 25.0, 0.5),
             "weight": (0.1, 12.0, 0.1), "maintenance_interval": (2000, 12000, 500), "warranty_months": [6, 12, 18],
             "temperature_range": ([-40, -30, -20], [120, 150, 200]), "price": (12, 1400), "quantity": (2, 100)},
    "sensor": {"accuracy": ["0.05", "0.1", "0.25", "0.5", "1.0"], "ip_rating": ["IP65", "IP66", "IP67", "IP68"],
               "weight": (0.1, 8.0, 0.1), "maintenance_interval": (2000, 17000, 500), "warranty_months": [24, 36, 60],
               "temperature_range": ([-40, -25, -20], [70, 80, 85]), "price": (140, 2900), "quantity": (1, 20)},
    "conveyor": {"load_capacity": (20, 3000, 10), "belt_speed": (0.5, 6.0, 0.1), "diameter": (50, 800, 5),
                 "weight": (0.8, 900.0, 0.5), "maintenance_interval": (1000, 8000, 250), "warranty_months": [12, 24],
                 "temperature_range": ([-30, -20, -10], [50, 60, 70, 80]), "price": (18, 3500), "quantity": (1, 80)},
}


@dataclass(frozen=True)
class FamilyDef:
    prefix: str
    name: str
    plural: str
    category: str
    ranges: dict[str, Any] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)


FAMILIES: tuple[FamilyDef, ...] = (
    FamilyDef("HX", "Hydraulic Gear Pump", "hydraulic gear pumps", "pump",
              {"max_pressure": (160, 280, 10), "flow_rate": (5, 150, 1), "power": _motors(1.1, 37)}),
    FamilyDef("BV", "Ball Valve", "ball valves", "valve"),
    FamilyDef("RS", "Rotary Screw Compressor", "rotary screw compressors", "compressor"),
    FamilyDef("HG", "Helical Gearbox", "helical gearboxes", "gearbox"),
    FamilyDef("DG", "Deep Groove Ball Bearing", "deep groove ball bearings", "bearing"),
    FamilyDef("MS", "Mechanical Seal Cartridge", "mechanical seal cartridges", "seal"),
    FamilyDef("PT", "Pressure Transmitter", "pressure transmitters", "sensor",
              {"measuring_range": ["1", "2.5", "6", "10", "16", "25", "40", "60", "100", "250", "400", "600"]},
              {"measuring_range": "0 to {v} bar"}),
    FamilyDef("CR", "Conveyor Roller, galvanised", "conveyor rollers", "conveyor"),
    FamilyDef("CP", "Centrifugal Process Pump", "centrifugal process pumps", "pump",
              {"max_pressure": (6, 16, 1), "flow_rate": (100, 3000, 10), "power": _motors(1.5, 90)}),
    FamilyDef("GV", "Gate Valve", "gate valves", "valve", {"max_pressure": ["10", "16", "25", "40"]}),
    FamilyDef("PC", "Piston Compressor", "piston compressors", "compressor",
              {"free_air_delivery": (0.2, 3.0, 0.1), "power": _motors(1.5, 22)}),
    FamilyDef("WG", "Worm Gearbox", "worm gearboxes", "gearbox"),
    FamilyDef("TR", "Tapered Roller Bearing", "tapered roller bearings", "bearing"),
    FamilyDef("LS", "Radial Shaft Seal, double lip", "radial shaft seals", "seal",
              {"max_pressure": ["0.3", "0.5", "0.7"]}),
    FamilyDef("TT", "Temperature Sensor", "temperature sensors", "sensor",
              {"measuring_range": [150, 200, 250, 400, 600]}, {"measuring_range": "-50 °C to +{v} °C"}),
    FamilyDef("BM", "Modular Belt Module", "modular belt modules", "conveyor"),
    FamilyDef("DP", "Electric Diaphragm Pump", "electric diaphragm pumps", "pump",
              {"max_pressure": (4, 8, 1), "flow_rate": (10, 600, 5), "power": _motors(0.37, 7.5)}),
    FamilyDef("CV", "Swing Check Valve", "swing check valves", "valve", {"max_pressure": ["10", "16", "25", "40"]}),
    FamilyDef("SC", "Scroll Compressor", "scroll compressors", "compressor",
              {"max_pressure": ["8", "10"], "free_air_delivery": (0.1, 2.5, 0.1), "power": _motors(1.5, 22)}),
    FamilyDef("PG", "Planetary Gearbox", "planetary gearboxes", "gearbox"),
    FamilyDef("SR", "Spherical Roller Bearing", "spherical roller bearings", "bearing"),
    FamilyDef("OR", "O-Ring Kit, FKM", "O-ring kits", "seal",
              {"max_pressure": (50, 250, 10), "sliding_speed": (0.5, 2.0, 0.5)}),
    FamilyDef("FM", "Electromagnetic Flow Meter", "electromagnetic flow meters", "sensor",
              {"measuring_range": (5, 2000, 5)}, {"measuring_range": "0 to {v} m³/h"}),
    FamilyDef("HP", "Head Drive Pulley", "head drive pulleys", "conveyor"),
    FamilyDef("SP", "Submersible Drainage Pump", "submersible drainage pumps", "pump",
              {"max_pressure": (2, 6, 1), "flow_rate": (100, 2500, 10), "power": _motors(0.75, 22)}),
    FamilyDef("PRV", "Pressure Relief Valve", "pressure relief valves", "valve",
              {"max_pressure": ["10", "16", "40", "100", "250", "400"]}),
    FamilyDef("OF", "Oil-Free Screw Compressor", "oil-free screw compressors", "compressor",
              {"max_pressure": ["8", "10"]}),
    FamilyDef("BG", "Bevel Helical Gearbox", "bevel helical gearboxes", "gearbox"),
    FamilyDef("PB", "Pillow Block Bearing Unit, cast iron", "pillow block bearing units", "bearing"),
    FamilyDef("GP", "Gland Packing Set", "gland packing sets", "seal", {"max_pressure": (10, 40, 1)}),
    FamilyDef("VS", "Vibration Sensor", "vibration sensors", "sensor",
              {"measuring_range": [25, 50, 100]}, {"measuring_range": "0 to {v} mm/s"}),
    FamilyDef("CI", "Troughing Idler Set, 3-roll", "troughing idler sets", "conveyor"),
    FamilyDef("VP", "Vane Pump", "vane pumps", "pump",
              {"max_pressure": (70, 210, 5), "flow_rate": (10, 250, 1), "power": _motors(1.1, 45)}),
    FamilyDef("SV", "Solenoid Valve", "solenoid valves", "valve",
              {"max_pressure": ["10", "16", "25"], "nominal_size": [8, 10, 15, 20, 25, 32, 40, 50]}),
    FamilyDef("LT", "Radar Level Transmitter", "radar level transmitters", "sensor",
              {"measuring_range": [5, 10, 15, 20, 30, 40]}, {"measuring_range": "0 to {v} m"}),
    FamilyDef("BFV", "Butterfly Valve", "butterfly valves", "valve", {"max_pressure": ["6", "10", "16"]}),
)

MODEL_NUMBERS = range(100, 10000, 10)


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    family: FamilyDef
    list_price: float
    specs: dict[str, str]  # spec key -> stated value, e.g. "max_pressure" -> "250 bar"
    service_kit: str
    install: dict[str, int]  # bolt_torque (Nm), clearance (mm), run_in (h), first_inspection (h)

    @property
    def category(self) -> str:
        return self.family.category


INSTALL_RANGES: dict[str, tuple[int, int, int]] = {
    "pump": (25, 120, 5), "valve": (30, 250, 5), "compressor": (40, 200, 10), "gearbox": (50, 400, 10),
    "bearing": (20, 180, 5), "seal": (5, 40, 1), "sensor": (15, 60, 5), "conveyor": (20, 120, 5),
}
TORQUE_TARGET = {
    "pump": "the foot mounting bolts", "valve": "the flange bolts", "compressor": "the anchor bolts",
    "gearbox": "the foot mounting bolts", "bearing": "the housing bolts", "seal": "the gland plate bolts",
    "sensor": "the process connection", "conveyor": "the bracket bolts",
}


def _draw(rng: random.Random, spec: Any) -> Any:
    if isinstance(spec, list):
        return rng.choice(spec)
    lo, hi, step = spec
    if isinstance(step, int) and isinstance(lo, int):
        return rng.randrange(lo, hi + 1, step)
    steps = int(round((hi - lo) / step))
    return round(lo + step * rng.randint(0, steps), 4)


def _product(seed: int, family: FamilyDef, model: int) -> Product:
    sku = f"{family.prefix}-{model}"
    rng = random.Random(f"agenix-sample:{seed}:product:{sku}")
    ranges = {**CATEGORY_RANGES[family.category], **family.ranges}
    specs: dict[str, str] = {}
    for key in CATEGORY_SPECS[family.category] + COMMON_SPECS:
        if key == "temperature_range":
            lows, highs = ranges[key]
            lo, hi = rng.choice(lows), rng.choice(highs)
            specs[key] = f"{lo} °C to +{hi} °C"
            continue
        fmt = family.formats.get(key, SPEC_DEFS[key].fmt)
        specs[key] = fmt.format(v=_draw(rng, ranges[key]))
    price_lo, price_hi = ranges["price"]
    price = round(price_lo * (price_hi / price_lo) ** rng.random(), 2)
    t_lo, t_hi, t_step = INSTALL_RANGES[family.category]
    install = {
        "bolt_torque": rng.randrange(t_lo, t_hi + 1, t_step),
        "clearance": rng.randrange(200, 1001, 50),
        "run_in": rng.randint(2, 8),
        "first_inspection": rng.randrange(50, 501, 50),
    }
    return Product(
        sku=sku,
        name=f"{sku} {family.name}",
        family=family,
        list_price=price,
        specs=specs,
        service_kit=f"{sku}-SK{rng.randint(1, 9)}",
        install=install,
    )


def build_catalog(seed: int = 7, size: int = 30) -> list[Product]:
    """The product catalog: ``size`` numbered models, round-robin over the product families.

    Deterministic from the seed and prefix-stable: ``build_catalog(s, n)[:k] == build_catalog(s, k)``.
    """
    if size > len(FAMILIES) * len(MODEL_NUMBERS):
        raise ValueError(f"catalog size {size} exceeds the available model numbers")
    pools = {}
    for family in FAMILIES:
        pool = list(MODEL_NUMBERS)
        random.Random(f"agenix-sample:{seed}:models:{family.prefix}").shuffle(pool)
        pools[family.prefix] = pool
    products = []
    for i in range(size):
        family = FAMILIES[i % len(FAMILIES)]
        products.append(_product(seed, family, pools[family.prefix][i // len(FAMILIES)]))
    return products


# ================================================================ PII helpers


@dataclass(frozen=True)
class Pii:
    """A planted PII value; rendering it through SpanText records its exact offsets."""

    text: str
    type: str
    known_contact: bool = False


_FORMATTER = string.Formatter()


@lru_cache(maxsize=None)
def _parse_template(template: str) -> tuple[tuple[str, str | None], ...]:
    return tuple((literal, name) for literal, name, _spec, _conv in _FORMATTER.parse(template))


class SpanText:
    """Builds a string from templates and records where every Pii value landed."""

    __slots__ = ("parts", "pos", "spans")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.spans: list[tuple[int, int, Pii]] = []

    def raw(self, text: str) -> None:
        self.parts.append(text)
        self.pos += len(text)

    def add(self, template: str, **values: Any) -> None:
        for literal, name in _parse_template(template):
            if literal:
                self.raw(literal)
            if name is None:
                continue
            value = values[name]
            if isinstance(value, Pii):
                self.spans.append((self.pos, self.pos + len(value.text), value))
                self.raw(value.text)
            else:
                self.raw(str(value))

    def text(self) -> str:
        return "".join(self.parts)


def _iban_digits(text: str) -> str:
    return "".join(str(int(ch, 36)) for ch in text)


def iban_is_valid(iban: str) -> bool:
    """ISO 13616 mod-97 check; spaces are ignored."""
    compact = iban.replace(" ", "").upper()
    if len(compact) < 15 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    return int(_iban_digits(compact[4:] + compact[:4])) % 97 == 1


# Basic bank account number layout per country: "n" digit, "a" upper-case letter (bank code).
BBAN_LAYOUT = {"DE": "n" * 18, "AT": "n" * 16, "CH": "n" * 17, "NL": "aaaa" + "n" * 10, "DK": "n" * 14,
               "SE": "n" * 20, "GB": "aaaa" + "n" * 14, "PL": "n" * 24}
BANK_CODES = {"NL": ("ABNA", "INGB", "RABO", "TRIO"), "GB": ("BARC", "HBUK", "LOYD", "NWBK")}


def _make_iban(rng: random.Random, country: str) -> str:
    layout = BBAN_LAYOUT[country]
    letters = layout.count("a")
    bban = (rng.choice(BANK_CODES[country]) if letters else "") + "".join(
        str(rng.randrange(10)) for _ in range(len(layout) - letters)
    )
    check = 98 - int(_iban_digits(bban + country + "00")) % 97
    iban = f"{country}{check:02d}{bban}"
    if rng.random() < 0.6:  # the printed form, grouped in fours
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randrange(10 ** (n - 1), 10**n))


def _make_phone(rng: random.Random, country: str, city: City) -> str:
    d = lambda n: _digits(rng, n)  # noqa: E731
    if country == "DE":
        return f"+49 {city.area_code} {d(7)}"
    if country == "AT":
        return f"+43 {city.area_code} {d(rng.choice((6, 7)))}"
    if country == "CH":
        return f"+41 {city.area_code} {d(3)} {d(2)} {d(2)}"
    if country == "NL":
        return f"+31 {city.area_code} {d(3)} {d(4)}"
    if country == "DK":
        return f"+45 {d(2)} {d(2)} {d(2)} {d(2)}"
    if country == "SE":
        return f"+46 {city.area_code} {d(3)} {d(3)} {d(2)}"
    if country == "GB":
        if len(city.area_code) == 2:
            return f"+44 {city.area_code} {d(4)} {d(4)}"
        return f"+44 {city.area_code} {d(3)} {d(4)}"
    return f"+48 {city.area_code} {d(3)} {d(2)} {d(2)}"


@dataclass(frozen=True)
class Address:
    street: str  # street line as stored in the CRM ("Lindenstraße 14", "14 Queen Street")
    postal_code: str
    city: str
    text: str  # one-line form used in running text


def _make_address(rng: random.Random, country: Country, city: City) -> Address:
    street = rng.choice(country.streets)
    number = rng.randint(1, 180)
    code = country.code
    if code == "GB":
        letters = "ABDEFGHJLNPQRSTUWXYZ"
        postal = f"{city.gb_outward} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"
        line = f"{number} {street}"
        return Address(line, postal, city.name, f"{line}, {city.name} {postal}")
    if code == "NL":
        letters = "ABCDEGHJKLMNPRSTVWXZ"
        postal = f"{city.postal_base + rng.randrange(0, 60)} {rng.choice(letters)}{rng.choice(letters)}"
    elif code == "SE":
        v = city.postal_base + rng.randrange(0, 80)
        postal = f"{v // 100:03d} {v % 100:02d}"
    elif code == "PL":
        v = city.postal_base + rng.randrange(0, 900)
        postal = f"{v // 1000:02d}-{v % 1000:03d}"
    elif code == "DE":
        postal = f"{city.postal_base + rng.randrange(0, 80):05d}"
    elif code == "AT" and city.name == "Wien":
        postal = f"{1010 + 10 * rng.randrange(0, 23)}"
    else:
        postal = f"{city.postal_base + rng.randrange(0, 9) * 10:04d}"
    line = f"ul. {street} {number}" if code == "PL" else f"{street} {number}"
    return Address(line, postal, city.name, f"{line}, {postal} {city.name}")


# ================================================================ time helpers


@dataclass(frozen=True)
class Window:
    """The three years before as_of; every generated timestamp lies in [start, end)."""

    start: datetime.datetime
    end: datetime.datetime

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())

    def recent_day(self, rng: random.Random) -> datetime.datetime:
        """Midnight of a random day, weighted towards recent days (the business grows)."""
        days = (self.end - self.start).days
        offset = min(days - 1, int(days * rng.random() ** 0.8))
        return self.start + datetime.timedelta(days=offset)

    def business_time(self, rng: random.Random) -> datetime.datetime:
        day = self.recent_day(rng)
        if rng.random() < 0.9:
            return day + datetime.timedelta(seconds=rng.randrange(7 * 3600, 19 * 3600))
        return day + datetime.timedelta(seconds=rng.randrange(86400))

    def between(
        self, rng: random.Random, lo: datetime.datetime, hi: datetime.datetime | None = None
    ) -> datetime.datetime:
        hi = self.end if hi is None else min(hi, self.end)
        span = int((hi - lo).total_seconds())
        if span <= 1:
            return lo
        return lo + datetime.timedelta(seconds=rng.randrange(span))

    def after(self, rng: random.Random, lo: datetime.datetime, min_s: int, max_s: int) -> datetime.datetime:
        """A time min_s..max_s seconds after lo, never at or beyond end (and never before lo)."""
        t = lo + datetime.timedelta(seconds=rng.randint(min_s, max_s))
        latest = self.end - datetime.timedelta(seconds=1)
        return max(lo, min(t, latest))


def _ts(value: datetime.datetime) -> str:
    return value.isoformat(timespec="seconds")


def _stream(seed: int, name: str) -> random.Random:
    return random.Random(f"agenix-sample:{seed}:{name}")


def _weighted_index(rng: random.Random, cumulative: Sequence[float]) -> int:
    """Index into a cumulative weight list (bisect, so large draws stay O(log n))."""
    return min(len(cumulative) - 1, bisect_right(cumulative, rng.random() * cumulative[-1]))


def _cumulative(weights: Iterable[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


# ================================================================ CRM


@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    industry: str
    segment: str
    country: Country
    city: City
    address: Address
    account_manager: str
    created_at: datetime.datetime
    updated_at: datetime.datetime
    domain: str


@dataclass(frozen=True)
class Contact:
    contact_id: str
    account: Account
    first_name: str
    last_name: str
    email: str
    phone: str
    job_title: str
    created_at: datetime.datetime
    updated_at: datetime.datetime

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


def _person_name(rng: random.Random, flavour: str) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES[flavour]), rng.choice(LAST_NAMES[flavour])


def _generate_accounts(rng: random.Random, n: int, window: Window) -> list[Account]:
    country_cum = _cumulative(c.weight for c in COUNTRIES)
    segment_cum = _cumulative(w for _, w in SEGMENTS)
    names: set[str] = set()
    domains: set[str] = set()
    accounts = []
    for i in range(1, n + 1):
        country = COUNTRIES[_weighted_index(rng, country_cum)]
        city = rng.choice(country.cities)
        name = ""
        for attempt in range(60):
            pattern = rng.choice(COMPANY_PATTERNS[country.code])
            a = rng.choice(LAST_NAMES[country.flavour])
            b = rng.choice(LAST_NAMES[country.flavour])
            if a == b and "{b}" in pattern:
                continue
            candidate = pattern.format(a=a, b=b, city=city.name)
            if attempt >= 40:  # crowded name space: add a regional qualifier before the legal form
                qualifier = rng.choice(REGION_QUALIFIERS[country.flavour])
                form = next((f for f in LEGAL_FORMS if candidate.endswith(f" {f}")), "")
                candidate = (f"{candidate[: -len(form) - 1]} {qualifier} {form}" if form
                             else f"{candidate} {qualifier}")
            candidate = candidate[0].upper() + candidate[1:]  # "de Graaf ..." -> "De Graaf ..."
            if candidate not in names:
                name = candidate
                break
        if not name:
            name = f"{rng.choice(LAST_NAMES[country.flavour])} Industrial {i}"
        names.add(name)
        base = name
        for form in LEGAL_FORMS:
            base = base.replace(f" {form}", "")
        domain_stem = _slug(base) or f"account-{i}"
        domain, k = f"{domain_stem}.example", 2
        while domain in domains:
            domain, k = f"{domain_stem}-{k}.example", k + 1
        domains.add(domain)
        created = window.between(rng, window.start, window.end - datetime.timedelta(days=60))
        accounts.append(
            Account(
                account_id=f"ACC-{i:05d}",
                name=name,
                industry=rng.choice(INDUSTRIES),
                segment=SEGMENTS[_weighted_index(rng, segment_cum)][0],
                country=country,
                city=city,
                address=_make_address(rng, country, city),
                account_manager=rng.choice(ACCOUNT_MANAGERS).name,
                created_at=created,
                updated_at=window.between(rng, created),
                domain=domain,
            )
        )
    return accounts


def _generate_contacts(rng: random.Random, n: int, accounts: list[Account], window: Window) -> list[Contact]:
    if n < len(accounts):
        raise ValueError("every account needs at least one contact")
    # Every account gets one contact; the rest go to accounts weighted by segment.
    owners = list(accounts)
    cum = _cumulative(SEGMENT_CONTACT_WEIGHT[a.segment] for a in accounts)
    owners += [accounts[_weighted_index(rng, cum)] for _ in range(n - len(accounts))]
    owners.sort(key=lambda a: a.account_id)  # contact ids grouped by account, like a CRM export
    emails: set[str] = set()
    contacts = []
    for i, account in enumerate(owners, start=1):
        flavour = account.country.flavour if rng.random() < 0.85 else rng.choice(FLAVOURS)
        first, last = _person_name(rng, flavour)
        while f"{first} {last}" in EMPLOYEE_NAMES:
            first, last = _person_name(rng, flavour)
        local = f"{_slug_name(first)}.{_slug_name(last)}"
        email, k = f"{local}@{account.domain}", 2
        while email in emails:
            email, k = f"{local}{k}@{account.domain}", k + 1
        emails.add(email)
        created = window.between(rng, account.created_at)
        contacts.append(
            Contact(
                contact_id=f"CON-{i:06d}",
                account=account,
                first_name=first,
                last_name=last,
                email=email,
                phone=_make_phone(rng, account.country.code, account.city),
                job_title=rng.choice(JOB_TITLES),
                created_at=created,
                updated_at=window.between(rng, created),
            )
        )
    return contacts


def _write_crm(path: Path, accounts: list[Account], contacts: list[Contact]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(
            """
            CREATE TABLE accounts(account_id TEXT PRIMARY KEY, name TEXT, industry TEXT, segment TEXT,
                country TEXT, city TEXT, street TEXT, postal_code TEXT, account_manager TEXT,
                created_at TEXT, updated_at TEXT);
            CREATE TABLE contacts(contact_id TEXT PRIMARY KEY, account_id TEXT, first_name TEXT, last_name TEXT,
                email TEXT, phone TEXT, job_title TEXT, created_at TEXT, updated_at TEXT);
            """
        )
        conn.executemany(
            "INSERT INTO accounts VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (a.account_id, a.name, a.industry, a.segment, a.country.code, a.city.name, a.address.street,
                 a.address.postal_code, a.account_manager, _ts(a.created_at), _ts(a.updated_at))
                for a in accounts
            ],
        )
        conn.executemany(
            "INSERT INTO contacts VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (c.contact_id, c.account.account_id, c.first_name, c.last_name, c.email, c.phone, c.job_title,
                 _ts(c.created_at), _ts(c.updated_at))
                for c in contacts
            ],
        )
        conn.commit()
    finally:
        conn.close()


# ================================================================ ERP orders

ORDER_HEADER = ("order_id", "account_id", "order_date", "sku", "product_name", "quantity", "unit_price", "currency",
                "status", "updated_at")


def _generate_orders(
    rng: random.Random, n: int, accounts: list[Account], catalog: list[Product], window: Window
) -> list[tuple[str, ...]]:
    cum = _cumulative(SEGMENT_ORDER_WEIGHT[a.segment] for a in accounts)
    today = window.end.date()
    drafts = []
    for _ in range(n):
        day = window.recent_day(rng)
        account = accounts[_weighted_index(rng, cum)]
        product = rng.choice(catalog)
        q_lo, q_hi = CATEGORY_RANGES[product.category]["quantity"]
        quantity = max(q_lo, min(q_hi, int(q_lo + (q_hi - q_lo) * rng.random() ** 3)))
        years_ago = (today - day.date()).days / 365
        price = product.list_price * (1 - SEGMENT_DISCOUNT[account.segment]) * (1 - 0.03 * years_ago)
        age = (today - day.date()).days
        r = rng.random()
        if r < 0.03:
            status, lag = "cancelled", (3600, 2 * 86400)
        elif age <= 2:
            status, lag = "open", (600, 8 * 3600)
        elif age <= 7:
            status, lag = ("open", (600, 8 * 3600)) if r < 0.3 else ("shipped", (86400, 3 * 86400))
        elif age <= 14:
            status, lag = ("shipped", (86400, 3 * 86400)) if r < 0.4 else ("delivered", (2 * 86400, 7 * 86400))
        elif r < 0.08:
            status, lag = "returned", (15 * 86400, 40 * 86400)
        else:
            status, lag = "delivered", (2 * 86400, 10 * 86400)
        placed = day + datetime.timedelta(seconds=rng.randrange(7 * 3600, 18 * 3600))
        placed = min(placed, window.end - datetime.timedelta(seconds=1))
        updated = window.after(rng, placed, *lag)
        drafts.append((day, account.account_id, product, quantity, round(price, 2), status, updated))
    drafts.sort(key=lambda d: d[0])  # stable: ties keep generation order
    return [
        (f"ORD-{i:07d}", acc, day.date().isoformat(), p.sku, p.name, str(qty), f"{price:.2f}", "EUR", status, _ts(upd))
        for i, (day, acc, p, qty, price, status, upd) in enumerate(drafts, start=1)
    ]


def _write_orders(path: Path, rows: list[tuple[str, ...]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(ORDER_HEADER)
        writer.writerows(rows)


# ================================================================ support tickets

CHANNELS = (("email", 55), ("phone", 20), ("portal", 25))
CATEGORIES = (("installation", 12), ("warranty", 16), ("returns", 12), ("billing", 12), ("maintenance", 18),
              ("shipping", 14), ("product_question", 16))
PRIORITIES = (("low", 20), ("normal", 55), ("high", 20), ("urgent", 5))

CATEGORY_SUBJECT = {
    "installation": "Installation question", "warranty": "Warranty claim", "returns": "Return request",
    "billing": "Invoice query", "maintenance": "Maintenance issue", "shipping": "Delivery problem",
    "product_question": "Product question",
}

OPENINGS = (
    "Hello, this is {person} from {company}.",
    "Dear Halvorsen support team, my name is {person} and I work as {job} at {company}.",
    "Hi, {person} here from {company}.",
    "Good morning, I am writing on behalf of {company}; my name is {person}.",
)
PROBLEMS = {
    "installation": (
        "We are commissioning a new {product} and {issue}.",
        "During the installation of the {product} at our plant we found that {issue}.",
    ),
    "warranty": (
        "Our {product} (serial number {serial}) failed after only {months} months in operation: we see {symptom}.",
        "The {product} we bought last year shows {symptom}, and it has been in service for only {months} months.",
    ),
    "returns": (
        "We would like to return {qty} units of the {product} from {order} because {issue}.",
        "Regarding {order}: we need to send back {qty} units of the {product}, as {issue}.",
    ),
    "billing": (
        "Invoice {invoice} for the {product} {issue}.",
        "We have a question about invoice {invoice} for the {product}: it {issue}.",
    ),
    "maintenance": (
        "During scheduled maintenance of our {product} we noticed {symptom}.",
        "Since last week our {product} has been showing {symptom}.",
    ),
    "shipping": (
        "The delivery of our {product} for {order} {issue}.",
        "Our shipment for {order}, which includes the {product}, {issue}.",
    ),
    "product_question": (
        "We are evaluating the {product} for {issue} and have a question.",
        "Before we order the {product} for {issue}, we would like some technical advice.",
    ),
}
ISSUES = {
    "installation": ("the flange connections do not match our existing pipework",
                     "the motor turns in the wrong direction on first start-up",
                     "we cannot find the tightening torques for the mounting bolts",
                     "the unit vibrates strongly after mounting on the base frame"),
    "returns": ("they were delivered in the wrong size", "we ordered too many", "the packaging was damaged on arrival",
                "the project they were ordered for was cancelled"),
    "billing": ("shows a higher unit price than agreed in our framework contract", "was charged twice",
                "lists the wrong VAT number", "does not include the agreed project discount"),
    "shipping": ("is now two weeks late", "arrived with a damaged crate", "was delivered to the wrong site",
                 "is missing the mounting kit"),
    "product_question": ("a new production line", "a retrofit of an existing plant", "an outdoor installation",
                         "a food-grade application"),
}
REQUESTS = {
    "installation": ("Could you send us the installation instructions or arrange a visit from a field engineer?",
                     "Please advise how to proceed."),
    "warranty": ("We believe this is a warranty case and would like to know how to proceed.",
                 "Please confirm whether the repair is covered by the warranty."),
    "returns": ("Please send us an RMA number and the return instructions.",
                "Could you let us know whether a restocking fee applies?"),
    "billing": ("Please send us a corrected invoice.", "Could you check this with your accounting department?"),
    "maintenance": ("Which spare parts do we need, and is there a service kit available?",
                    "Can you recommend what to check first?"),
    "shipping": ("Please let us know the new delivery date.", "Could you check the status with the carrier?"),
    "product_question": ("Is it suitable for continuous operation at high ambient temperatures?",
                         "Is a version with ATEX certification available?",
                         "Can it be used with food-grade lubricants?"),
}
DETAILS = (
    "The unit runs in three-shift operation, so this is affecting our production.",
    "A quick answer would be appreciated, as the line is currently stopped.",
    "We have attached photos of the nameplate and the installation.",
    "This is not urgent, but we would like to plan the work for our next shutdown.",
)
IBAN_SENTENCES = (
    "Please transfer the refund to our account {iban}.",
    "Our bank details have changed; the new IBAN is {iban}.",
)
ADDRESS_SENTENCES = (
    "Please send the replacement parts to our site at {address}.",
    "The unit is installed at our plant, {address}.",
)
COLLEAGUE_SENTENCES = (
    "If I am not available, please contact my colleague {colleague}.",
    "My colleague {colleague} ({colleague_email}) is also involved in this case.",
)
UNKNOWN_SENTENCES = (
    "Please also copy {unknown} ({unknown_email}) from our maintenance contractor on your reply.",
    "Our external technician {unknown} ({unknown_email}) will be on site for the inspection.",
    "{unknown} from our parent company asked me to raise this; the e-mail address is {unknown_email}.",
)
CONTACT_SENTENCES = (  # one in five gives only the phone number
    "You can reach me at {email} or by phone on {phone}.",
    "Please call me on {phone} or write to {email}.",
    "My e-mail address is {email} and my direct line is {phone}.",
    "For questions, write to {email} or call {phone}.",
    "My direct line is {phone}.",
)
SIGNOFFS = ("\n\nBest regards,\n{person}", "\n\nKind regards,\n{person}\n{company}", "")
RESOLUTIONS = {
    "installation": ("Sent the installation guide and the torque table; customer completed the installation.",
                     "Field engineer visit arranged; unit commissioned successfully."),
    "warranty": ("Warranty claim approved; replacement parts from kit {kit} shipped free of charge.",
                 "Unit inspected at the service centre; defect confirmed and repaired under warranty."),
    "returns": ("RMA issued and the goods were returned; credit note sent.",
                "Return approved; replacement shipped in the correct size."),
    "billing": ("Corrected invoice issued.", "Price checked against the framework contract; credit note issued."),
    "maintenance": ("Recommended service kit {kit}; customer replaced the wear parts and the unit runs normally.",
                    "Remote diagnosis completed; the issue was solved by following the troubleshooting guide."),
    "shipping": ("Carrier investigation completed; missing items re-shipped by express.",
                 "New delivery date confirmed with the customer."),
    "product_question": ("Answered with the data sheet and application notes.",
                         "Product manager confirmed suitability; quotation sent."),
}

# symptom, cause, fix ({kit} is the product's service kit). Shared by tickets and troubleshooting guides.
TROUBLE: dict[str, tuple[tuple[str, str, str], ...]] = {
    "pump": (
        ("excessive noise", "cavitation caused by a clogged suction strainer",
         "clean the suction strainer and check that all suction-side valves are fully open"),
        ("a low flow rate", "increased internal leakage from worn wear parts",
         "replace the wear parts using service kit {kit}"),
        ("leakage at the shaft", "a worn or damaged shaft seal",
         "replace the shaft seal with the seal set from service kit {kit}"),
        ("overheating", "a fluid viscosity that is too low for the operating temperature",
         "change to the recommended fluid grade and check the cooler for fouling"),
        ("pressure fluctuations", "air entering through a loose suction fitting",
         "tighten the suction fittings and bleed the system"),
    ),
    "valve": (
        ("incomplete closing", "debris trapped on the valve seat", "flush the line and clean or replace the seat"),
        ("external leakage at the stem", "worn stem packing",
         "retighten the packing gland and replace the packing with service kit {kit} if the leak persists"),
        ("valve chatter", "a valve that is oversized for the actual flow",
         "check the sizing and reduce the pressure drop across the valve"),
        ("a stiff actuation", "corrosion on the stem caused by missing lubrication",
         "clean and lubricate the stem and replace damaged seals from kit {kit}"),
    ),
    "compressor": (
        ("a high discharge temperature", "clogged cooler fins",
         "clean the cooler and check the ventilation of the compressor room"),
        ("oil carry-over into the compressed air", "a saturated separator element",
         "replace the separator element from service kit {kit}"),
        ("a failure to start", "a tripped motor protection switch",
         "check the supply voltage and reset the motor protection switch"),
        ("a slow pressure build-up", "a leaking intake valve",
         "inspect the intake valve and replace its seals from kit {kit}"),
    ),
    "gearbox": (
        ("oil leakage", "a worn output shaft seal", "replace the output shaft seal using service kit {kit}"),
        ("unusual running noise", "bearing wear after insufficient lubrication",
         "check the oil level and replace the bearings"),
        ("overheating", "an incorrect oil level or oil grade",
         "drain the oil and refill with the specified grade to the correct level"),
        ("strong vibration", "a misaligned motor coupling",
         "realign the coupling with a dial gauge or laser alignment tool"),
    ),
    "bearing": (
        ("running hot", "over-lubrication", "remove excess grease and relubricate with the specified quantity"),
        ("a rumbling noise", "contamination of the raceways", "replace the bearing and improve the sealing"),
        ("premature failure", "misalignment between shaft and housing",
         "check the alignment and the shaft tolerances before fitting a new bearing"),
        ("fretting marks on the outer ring", "a loose fit in the housing",
         "check the housing bore and replace the housing if it is worn"),
    ),
    "seal": (
        ("leakage on start-up", "dry running that damaged the seal faces",
         "replace the seal with kit {kit} and make sure the seal chamber is flooded before start-up"),
        ("continuous dripping", "worn seal faces", "replace the seal faces from service kit {kit}"),
        ("squealing noise", "insufficient flushing of the seal chamber",
         "check the flush line and restore the flushing flow"),
        ("swelling of the elastomers", "a seal material that is not compatible with the process medium",
         "change to a compatible elastomer grade"),
    ),
    "sensor": (
        ("a drifting signal", "a zero offset after long operation",
         "recalibrate the zero point following the calibration procedure"),
        ("no output signal", "a missing loop supply or a wiring fault",
         "check the loop power and the terminal connections"),
        ("noisy readings", "electromagnetic interference from frequency converter cables",
         "use shielded cable and separate signal and power cables"),
        ("a frozen reading", "a firmware hang after a power dip",
         "power-cycle the device and install the latest firmware"),
    ),
    "conveyor": (
        ("belt mistracking", "misaligned idlers", "realign the idlers and check the belt splice"),
        ("roller noise", "worn roller bearings", "replace the affected rollers or their bearings using kit {kit}"),
        ("belt slippage", "insufficient belt tension", "increase the belt tension to the value given in the manual"),
        ("material spillage", "worn skirt rubbers", "replace the skirt rubbers and adjust the skirting"),
    ),
}


def _bare(symptom: str) -> str:
    """The symptom without its article ("a low flow rate" -> "low flow rate")."""
    return symptom.removeprefix("a ").removeprefix("an ")


def _unknown_person(
    rng: random.Random, account: Account, known_names: set[str], known_emails: set[str]
) -> tuple[str, str]:
    """A plausible person who is neither a CRM contact nor a Halvorsen employee."""
    while True:
        first, last = _person_name(rng, rng.choice(FLAVOURS))
        name = f"{first} {last}"
        if name in known_names or name in EMPLOYEE_NAMES:
            continue
        domain = account.domain if rng.random() < 0.5 else rng.choice(UNKNOWN_EMAIL_DOMAINS)
        email = f"{_slug_name(first)}.{_slug_name(last)}@{domain}"
        if email not in known_emails:
            return name, email


def _recent_order(
    rng: random.Random, orders: tuple[list[str], list[str]] | None, created: datetime.datetime
) -> str:
    """How a ticket refers to one of the account's last orders before the ticket was written."""
    if orders:
        dates, ids = orders
        before = bisect_left(dates, created.date().isoformat())
        if before:
            return f"order {rng.choice(ids[max(0, before - 5):before])}"
    return "our last order"


def _generate_tickets(
    rng: random.Random,
    n: int,
    contacts: list[Contact],
    catalog: list[Product],
    orders_by_account: dict[str, tuple[list[str], list[str]]],
    window: Window,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    by_account: dict[str, list[Contact]] = {}
    for c in contacts:
        by_account.setdefault(c.account.account_id, []).append(c)
    known_names = {c.name for c in contacts}
    known_emails = {c.email for c in contacts}
    channel_cum = _cumulative(w for _, w in CHANNELS)
    category_cum = _cumulative(w for _, w in CATEGORIES)
    priority_cum = _cumulative(w for _, w in PRIORITIES)

    created_times = sorted(window.business_time(rng) for _ in range(n))
    # Exact shares of the rarer PII kinds, so even the small scale contains every kind.
    def pick(share: float) -> set[int]:
        return set(rng.sample(range(n), min(n, max(1, round(n * share)))))

    with_unknown, with_iban, with_address, with_colleague = pick(0.05), pick(0.08), pick(0.10), pick(0.15)

    tickets: list[dict[str, Any]] = []
    pii: list[dict[str, Any]] = []
    for i, created in enumerate(created_times):
        ticket_id = f"TCK-{i + 1:06d}"
        contact = rng.choice(contacts)
        account = contact.account
        product = rng.choice(catalog)
        category = CATEGORIES[_weighted_index(rng, category_cum)][0]
        symptom, _cause, _fix = rng.choice(TROUBLE[product.category])

        person = Pii(contact.name, "PERSON", True)
        values: dict[str, Any] = {
            "person": person, "company": account.name, "job": contact.job_title, "product": product.name,
            "serial": f"SN {created.year % 100:02d}-{rng.randrange(100000, 999999)}",
            "months": rng.randint(2, 20), "qty": rng.randint(1, 12),
            "order": _recent_order(rng, orders_by_account.get(account.account_id), created),
            "invoice": f"INV-{created.year}-{rng.randrange(10000, 99999)}",
            "symptom": symptom, "issue": rng.choice(ISSUES.get(category, ("",))),
            "email": Pii(contact.email, "EMAIL_ADDRESS", True), "phone": Pii(contact.phone, "PHONE_NUMBER"),
        }
        body = SpanText()
        sentences: list[tuple[str, dict[str, Any]]] = [(rng.choice(OPENINGS), values)]
        sentences.append((rng.choice(PROBLEMS[category]), values))
        extras: list[tuple[str, dict[str, Any]]] = []
        if i in with_iban:
            iban_country = account.country.code if rng.random() < 0.7 else rng.choice(("DE", "NL", "AT"))
            extras.append((rng.choice(IBAN_SENTENCES), {"iban": Pii(_make_iban(rng, iban_country), "IBAN_CODE")}))
        if i in with_address:
            site = _make_address(rng, account.country, rng.choice(account.country.cities))
            extras.append((rng.choice(ADDRESS_SENTENCES), {"address": Pii(site.text, "STREET_ADDRESS")}))
        colleagues = [c for c in by_account[account.account_id] if c is not contact]
        if i in with_colleague and colleagues:
            other = rng.choice(colleagues)
            extras.append((rng.choice(COLLEAGUE_SENTENCES), {
                "colleague": Pii(other.name, "PERSON", True),
                "colleague_email": Pii(other.email, "EMAIL_ADDRESS", True)}))
        if i in with_unknown:
            name, email = _unknown_person(rng, account, known_names, known_emails)
            extras.append((rng.choice(UNKNOWN_SENTENCES), {
                "unknown": Pii(name, "PERSON", False), "unknown_email": Pii(email, "EMAIL_ADDRESS", False)}))
        # 2-6 sentences: opening, problem, optional request/detail, PII extras, contact line.
        room = 6 - len(sentences) - len(extras) - 1
        if room > 0 and rng.random() < 0.8:
            sentences.append((rng.choice(REQUESTS[category]), values))
            room -= 1
        if room > 0 and rng.random() < 0.4:
            sentences.append((rng.choice(DETAILS), values))
        sentences.extend(extras)
        sentences.append((rng.choice(CONTACT_SENTENCES), values))
        for k, (template, vals) in enumerate(sentences):
            if k:
                body.raw(" ")
            body.add(template, **vals)
        body.add(rng.choice(SIGNOFFS), **values)
        text = body.text()

        age_days = (window.end - created).days
        r = rng.random()
        if age_days < 7:
            status = "open" if r < 0.45 else "pending" if r < 0.8 else "resolved"
        elif age_days < 30:
            status = "open" if r < 0.1 else "pending" if r < 0.3 else "resolved" if r < 0.8 else "closed"
        else:
            status = "open" if r < 0.01 else "pending" if r < 0.03 else "resolved" if r < 0.2 else "closed"
        lag = {"open": (0, 2 * 86400), "pending": (3600, 5 * 86400), "resolved": (3600, 14 * 86400),
               "closed": (7 * 86400, 28 * 86400)}[status]
        updated = window.after(rng, created, *lag)
        resolution = None
        if status in ("resolved", "closed"):
            resolution = rng.choice(RESOLUTIONS[category]).format(kit=product.service_kit)
        tickets.append(
            {
                "ticket_id": ticket_id,
                "account_id": account.account_id,
                "contact_id": contact.contact_id,
                "created_at": _ts(created),
                "updated_at": _ts(updated),
                "channel": CHANNELS[_weighted_index(rng, channel_cum)][0],
                "category": category,
                "priority": PRIORITIES[_weighted_index(rng, priority_cum)][0],
                "status": status,
                "product_sku": product.sku,
                "subject": f"{CATEGORY_SUBJECT[category]}: {product.sku}"
                + (f" {_bare(symptom)}" if category in ("warranty", "maintenance") else ""),
                "body": text,
                "resolution": resolution,
            }
        )
        for start, end, value in body.spans:
            pii.append(_pii_record("support_tickets", ticket_id, start, end, value))
    return tickets, pii


def _pii_record(source: str, record_id: str, start: int | None, end: int | None, value: Pii) -> dict[str, Any]:
    return {
        "source": source,
        "record_id": record_id,
        "field": "body",
        "start": start,
        "end": end,
        "text": value.text,
        "type": value.type,
        "known_contact": value.known_contact if value.type in ("PERSON", "EMAIL_ADDRESS") else False,
    }


def _write_tickets(folder: Path, tickets: list[dict[str, Any]]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    by_month: dict[str, list[str]] = {}
    for t in tickets:  # already in ticket_id order
        month = t["created_at"][:7].replace("-", "_")
        by_month.setdefault(month, []).append(json.dumps(t, ensure_ascii=False))
    for month in sorted(by_month):
        text = "\n".join(by_month[month]) + "\n"
        (folder / f"tickets_{month}.jsonl").write_text(text, encoding="utf-8", newline="\n")
    return len(by_month)


# ================================================================ documents


@dataclass
class Block:
    kind: str  # "h2" | "p" | "ul"
    text: str = ""
    items: tuple[str, ...] = ()
    spans: tuple[tuple[int, int, Pii], ...] = ()  # PII offsets relative to text ("p" only)


@dataclass
class Section:
    heading: str
    blocks: list[Block] = field(default_factory=list)
    expandable: bool = False
    grammar: str = ""  # filler grammar used when the section is expanded


@dataclass(frozen=True)
class Fact:
    key: str
    question: str
    answer: str
    sentence: str


@dataclass
class Document:
    path: str  # relative to documents/, with extension
    kind: str
    title: str
    intro: list[Block] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    used: set[Any] = field(default_factory=set)  # filler sentences and templates already used (membership only)
    queues: dict[str, list[int]] = field(default_factory=dict)  # filler templates not yet used, per grammar
    last_rule: Any = None

    def blocks(self) -> Iterable[Block]:
        yield from self.intro
        for s in self.sections:
            yield Block("h2", s.heading)
            yield from s.blocks

    def words(self) -> int:
        total = len(self.title.split())
        for b in self.blocks():
            total += b.text.count(" ") + 1 if b.text else 0
            total += sum(i.count(" ") + 1 for i in b.items)
        return total


# Filler text: a tiny grammar. "[a|b|c]" picks one alternative, "{sku}" etc. are filled from the product.
# Filler never contains numbers, so it can never contradict a fact. A document uses every template of a
# grammar once (in shuffled order) before it reuses one, and never repeats an exact sentence if avoidable.
GENERAL_POOL = (
    "[This document|This article|This publication] is part of the Halvorsen knowledge base and is "
    "[maintained|reviewed regularly|kept up to date] by the [product management|technical documentation|application "
    "engineering] team.",
    "[All information|The information in this document|Everything described here] applies to "
    "[units|products|equipment] delivered by Halvorsen Industrial Supply unless a [customer-specific "
    "agreement|separate contract|project specification] states otherwise.",
    "[Read|Study] this document [completely|carefully|in full] before [working on|installing|operating|servicing] "
    "the {sku}, and keep it [available at the installation site|with the plant documentation|close to the unit].",
    "The {family} of the {prefix} series share [most components|many wear parts|a common housing design|the same "
    "sealing concept], which [simplifies spare parts stocking|reduces the number of parts to keep in stock|makes "
    "service work easier].",
    "[Every|Each] {sku} leaves the factory with [a test report|a final inspection record|a declaration of conformity].",
    "[Illustrations|Drawings|Photos] in this document may differ [slightly|in detail] from the delivered "
    "[version|configuration] of the product.",
    "Customer-specific [variants|options|modifications] are documented in a [supplement|separate data sheet|project "
    "file] that is delivered with the unit.",
    "Halvorsen keeps spare parts for [discontinued|older|superseded] models available for many years after the end "
    "of production.",
    "[Please quote|Always state|Use] the serial number from the nameplate in all [correspondence|service "
    "requests|spare parts orders].",
    "Our [application engineers|sales engineers|technical specialists] can help to select the right "
    "[variant|size|material combination] for [demanding|unusual|aggressive] operating conditions.",
    "The design of the {sku} [focuses on|puts the emphasis on|is optimised for] [long service life|easy access to "
    "wear parts|low life-cycle cost|energy efficiency|quiet operation].",
    "The {sku} is [designed|built|engineered] for [continuous duty|intermittent duty|demanding industrial "
    "environments|installation in confined spaces].",
    "[Materials|Coatings|Surface treatments] of the {sku} are selected for [resistance to corrosion|compatibility "
    "with common process media|a long service life in industrial use].",
    "[Optional accessories|Mounting kits|Monitoring options] for the {sku} are listed in the [price list|product "
    "catalogue|online configurator].",
    "[Store|Keep] the {sku} [in a dry, frost-free room|in its original packaging|away from direct sunlight] until "
    "it is installed.",
    "[Documentation|Certificates|Drawings] for the {sku} can be requested [through the service portal|from the "
    "customer service team|from the sales office].",
)
OPERATION_POOL = (
    "Start the {sku} only when [all guards and covers are fitted|the system has been vented|all valves are in the "
    "correct position].",
    "[Avoid|Minimise] [frequent start-stop cycles|long periods of operation at partial load|sudden load changes], "
    "as they [increase wear on moving parts|shorten the service life of the seals|put unnecessary stress on the "
    "bearings].",
    "[Monitor|Watch|Observe] [noise and vibration|temperatures and pressures|the current consumption] during the "
    "first [days|weeks] of operation and [record|note|document] any change.",
    "Operate the {sku} within the limits given in the technical [specifications|data|data sheet] at all times.",
    "[Sudden|Unexpected|Gradual] changes in [noise|temperature|vibration|power consumption] are [early "
    "signs|typical indicators|a warning sign] of a developing fault.",
    "If the unit is controlled by a frequency converter, [set the ramp times|adjust the acceleration "
    "ramps|configure the start-up sequence] so that [pressure surges|torque peaks|mechanical shocks] are avoided.",
    "Do not operate the {sku} [against closed valves|with blocked outlets|without the specified lubrication|outside "
    "its rated operating range].",
    "Check the readings of the connected instruments [at the beginning of every shift|at regular intervals|after "
    "every restart].",
    "[Operators|Operating personnel|Shift staff] should be familiar with the [emergency stop procedure|shutdown "
    "sequence|alarm handling] of the plant.",
    "[When|If] the unit is taken out of service for a longer period, follow the [storage instructions|preservation "
    "instructions|shutdown procedure] in this document.",
    "Keep the area around the {sku} [clean|tidy|free of obstacles] so that [leaks|signs of damage|unusual noises] "
    "are noticed early.",
    "[Operating data|Running hours|Load profiles] should be [logged|recorded|tracked] to support condition-based "
    "maintenance.",
    "[Before restarting|After a long standstill|After maintenance], [turn the shaft by hand|check the free movement "
    "of moving parts|verify the direction of rotation] where the design allows it.",
    "[Shut down|Stop] the {sku} [immediately|without delay] if [unusual noise|smoke|a strong smell|a sudden "
    "pressure drop] occurs.",
)
MAINTENANCE_POOL = (
    "Keep a maintenance log for [every unit|each installed unit|the {sku}] and record all [inspections, repairs and "
    "replaced parts|service work and findings].",
    "Use only original Halvorsen spare parts; [third-party parts|non-original parts|unapproved parts] can [void the "
    "warranty|impair safety|shorten the service life].",
    "[Clean|Wipe down] the exterior [regularly|at each inspection] so that [leaks and damage|corrosion and cracks] "
    "are noticed early.",
    "Check all [fasteners|bolted connections|mounting bolts] for tightness during [each inspection|every "
    "service|the first weeks of operation].",
    "Replace [seals and gaskets|O-rings|sealing elements] whenever a [joint|connection|cover] has been opened.",
    "Dispose of used [lubricants|filters|cleaning agents] according to [local regulations|the applicable "
    "environmental rules].",
    "Shorter intervals apply in [dusty|humid|corrosive|hot] environments.",
    "[Condition monitoring|Regular vibration measurement|Thermographic inspection] helps to [plan maintenance "
    "work|detect wear early|avoid unplanned downtime].",
    "After maintenance, carry out a [functional test|test run|leak test] before returning the {sku} to production.",
    "Service kits combine all [wear parts|seals and consumables|parts needed for a scheduled service] in one package.",
    "[Inspect|Check] the {sku} for [corrosion|external damage|loose connections|signs of overheating] during every "
    "visual inspection.",
    "[Lubricate|Grease] moving parts with the [specified|approved|recommended] lubricant only.",
    "[Record|Document] the condition of the {sku} [before and after|at the end of] each service.",
)
SAFETY_POOL = (
    "Disconnect and lock out the power supply before any [maintenance|repair|cleaning] work.",
    "Depressurise the system completely before opening any [connection|cover|fitting].",
    "Wear [safety glasses and gloves|suitable personal protective equipment] when handling [lubricants|process "
    "media|cleaning agents].",
    "Never exceed the rated limits stated in the technical data.",
    "Allow hot surfaces to cool down before touching them.",
    "Only [qualified|trained and authorised] personnel may install, operate or service the equipment.",
    "Use suitable lifting gear and attach it only at the marked lifting points.",
    "Observe the local regulations for working with [pressurised equipment|electrical equipment|rotating machinery].",
    "Keep unauthorised persons away from the working area.",
    "Secure the unit against [unintended start-up|accidental restart] during work.",
    "Do not remove [guards|covers|protective devices] while the unit is running.",
)
INSTALL_POOL = (
    "Check the delivery for [transport damage|completeness|visible defects] before installation.",
    "Make sure the [foundation|base frame|mounting surface] is [level and rigid|flat and free of vibration|strong "
    "enough to carry the unit].",
    "Align couplings carefully; misalignment is a [frequent|common|major] cause of premature wear.",
    "Support [pipework|cables|connected components] independently so that no forces act on the connections of the "
    "{sku}.",
    "Remove all [transport locks|protective caps|packaging materials] before connecting the unit.",
    "Flush new pipework before connecting it, as [welding residue|debris|scale] damages internal parts.",
    "Electrical connections must be made by a qualified electrician according to local regulations.",
    "Compare the data on the nameplate with the [operating conditions of the plant|planned duty point|electrical "
    "supply].",
    "Provide [isolating valves|disconnect switches|service connections] so that the {sku} can be [removed|serviced] "
    "without [draining the whole system|shutting down the plant].",
    "Keep the installation [instructions|records|protocol] with the plant documentation.",
    "[Check|Verify] the direction of rotation [before the first start|during a short test run].",
    "[Protect|Cover] the {sku} against [dirt|weld spatter|paint overspray] during construction work.",
)
TROUBLESHOOT_POOL = (
    "Work through the checks in the order given, starting with the [simplest|most likely|easiest to check] cause.",
    "Record the operating conditions at the time of the fault; they help our service team with the diagnosis.",
    "If several symptoms occur together, start with the one that appeared first.",
    "Check whether recent changes to the plant, such as [a new process medium|modified control settings|a different "
    "operating schedule], coincide with the fault.",
    "Compare current readings with the values recorded at commissioning.",
    "Do not attempt repairs beyond those described here without consulting our service team.",
    "Replaced parts should be kept for inspection in case a warranty claim is made.",
    "Many faults are caused by operating conditions outside the specification rather than by the {sku} itself.",
    "[Photos|Short videos|Trend data] of the fault [make the diagnosis easier|speed up the analysis|help our "
    "service team].",
    "After the fix, [monitor the {sku} closely|check the result|observe the unit] for [several hours|the next "
    "shifts|a few days].",
    "[Isolate|Stop] the {sku} before [inspecting|opening|dismantling] any component.",
    "[An infrared thermometer|A vibration pen|A mechanic's stethoscope] is useful for [a first diagnosis|locating "
    "the fault|comparing hot spots].",
    "[Faults|Problems] that [reappear|return] after a repair usually point to [an underlying cause in the "
    "plant|incorrect operating conditions].",
    "Check the [control system|alarm history|event log] for [warnings|trips|alarms] that occurred before the fault.",
    "[Temporary|Provisional] repairs must be [documented|reported] and replaced by a permanent fix [as soon as "
    "possible|at the next shutdown].",
    "If the {sku} is still under warranty, [contact|inform] our service team before [dismantling|opening|modifying] "
    "it.",
    "[Compare|Check] the {sku} with [a similar unit|an identical unit|other units] in the plant if one is available.",
    "Note the [serial number|nameplate data|installation date] of the {sku} before contacting the service team.",
)
POLICY_POOL = (
    "This policy applies to all products sold by Halvorsen Industrial Supply GmbH and its subsidiaries.",
    "Individual framework agreements take precedence over this policy where they differ.",
    "Requests are handled through the service portal or by the customer service team.",
    "Please quote the [order number|invoice number|article number|delivery note number] in all correspondence.",
    "Goods must be packed so that they are protected against damage during transport.",
    "Our customer service team will confirm receipt of every request in writing.",
    "Halvorsen reserves the right to inspect [returned goods|claimed parts] before accepting a claim.",
    "Statutory rights of the customer remain unaffected by this policy.",
    "Incomplete requests may delay processing.",
    "The current version of this policy replaces all earlier versions.",
    "[Customers|Buyers] are asked to [check deliveries promptly|report problems as early as possible|keep all "
    "delivery documents].",
    "[Questions|Disputes] about this policy are [handled|resolved] by the [customer service team|responsible sales "
    "office].",
    "Goods that were [modified|installed|used] by the customer are [assessed individually|subject to inspection].",
    "[Special|Customised|Made-to-order] items are [excluded unless agreed otherwise|handled case by case].",
    "[Claims|Requests|Notifications] [received|submitted] [by e-mail|through the service portal|in writing] are "
    "processed in the order of receipt.",
    "[Credit notes|Refunds|Replacement deliveries] are issued once the [inspection|assessment|review] is complete.",
    "[Defective|Damaged|Incorrect] goods must not be [used|installed|modified] until the claim has been "
    "[settled|assessed].",
    "The customer service team [informs|notifies] the customer [about the result|of the decision] [in writing|by "
    "e-mail].",
    "[Contaminated parts|Parts in contact with hazardous media] must be [cleaned|decontaminated] and declared "
    "before [shipment|return].",
    "[Deviations|Exceptions] from this policy require [written confirmation|the approval of the responsible sales "
    "office].",
    "This policy [forms part of|supplements] the general terms and conditions of sale of Halvorsen Industrial "
    "Supply GmbH.",
    "[Customers|Buyers] can [download|request] a copy of this policy [from the service portal|from the customer "
    "service team].",
    "[Invoices|Delivery notes|Order confirmations] [state|reference] the applicable edition of this policy.",
)
APPLICATIONS = {
    "pump": ("hydraulic power units", "process water circulation", "chemical transfer", "cooling circuits",
             "wastewater drainage", "boiler feed systems"),
    "valve": ("process lines", "water treatment", "district heating", "general industrial piping",
              "compressed air networks", "tank farms"),
    "compressor": ("compressed air supply for production lines", "workshops", "packaging machines",
                   "pneumatic conveying", "paint shops"),
    "gearbox": ("conveyors", "mixers", "extruders", "hoisting equipment", "agitators", "crushers"),
    "bearing": ("electric motors", "pumps", "fans", "gearboxes", "conveyor systems", "vibrating screens"),
    "seal": ("pumps", "agitators", "mixers", "rotating equipment in the process industry", "hydraulic cylinders"),
    "sensor": ("process monitoring", "condition monitoring", "control loops", "energy metering", "tank gauging"),
    "conveyor": ("bulk material handling", "packaging lines", "intralogistics", "quarry conveyors", "recycling plants"),
}
PART_NAMES = ("Shaft seal kit", "Bearing set", "Gasket set", "Coupling insert", "Wear plate", "Drive shaft",
              "Cover plate", "Terminal box", "Spring set", "O-ring set", "Fastener kit", "Lubrication nipple",
              "Housing cover", "Inspection window", "Cable gland", "Guard assembly")

Grammar = tuple[tuple[str | tuple[str, ...], ...], ...]


def _compile(pool: Sequence[str]) -> Grammar:
    """Split "[a|b]" alternations once, so drawing a sentence is a few choices and a join."""
    compiled = []
    for template in pool:
        parts: list[str | tuple[str, ...]] = []
        for k, piece in enumerate(re.split(r"\[([^\]]+)\]", template)):
            if k % 2:
                parts.append(tuple(piece.split("|")))
            elif piece:
                parts.append(piece)
        compiled.append(tuple(parts))
    return tuple(compiled)


GRAMMARS: dict[str, Grammar] = {
    name: _compile(pool)
    for name, pool in (
        ("general", GENERAL_POOL), ("operation", OPERATION_POOL), ("maintenance", MAINTENANCE_POOL),
        ("safety", SAFETY_POOL), ("install", INSTALL_POOL), ("troubleshoot", TROUBLESHOOT_POOL),
        ("policy", POLICY_POOL), ("background", GENERAL_POOL + OPERATION_POOL + MAINTENANCE_POOL),
        ("diagnosis", TROUBLESHOOT_POOL + OPERATION_POOL + MAINTENANCE_POOL),
        ("installation", INSTALL_POOL + GENERAL_POOL + OPERATION_POOL),
    )
}


def _next_rule(rng: random.Random, doc: Document, grammar: str, rules: Grammar) -> tuple[str | tuple[str, ...], ...]:
    """Next template in the document's shuffled queue, skipping templates the document already used
    (via any grammar); once the queue runs dry it is refilled and reuse is allowed."""
    for cycle in range(2):
        queue = doc.queues.get(grammar)
        while queue:
            rule = rules[queue.pop()]
            if rule not in doc.used:
                doc.used.add(rule)
                return rule
        # Every template was used: start a new cycle for this grammar.
        doc.used.difference_update(rules)
        queue = doc.queues[grammar] = list(range(len(rules)))
        rng.shuffle(queue)
        if cycle == 0 and len(queue) > 1 and rules[queue[-1]] is doc.last_rule:
            queue.insert(0, queue.pop())
    return rules[0]


def _sentences(rng: random.Random, doc: Document, grammar: str, k: int, fmt: dict[str, str]) -> list[str]:
    """k filler sentences from a grammar, none already used in this document (when avoidable)."""
    rules = GRAMMARS[grammar]
    out: list[str] = []
    for _ in range(k):
        rule = doc.last_rule = _next_rule(rng, doc, grammar, rules)
        sentence = ""
        for _attempt in range(6):
            sentence = "".join(p if isinstance(p, str) else rng.choice(p) for p in rule)
            if sentence not in doc.used:
                break
        doc.used.add(sentence)
        out.append(sentence.format(**fmt) if fmt else sentence)
    return out


def _filler(rng: random.Random, doc: Document, grammar: str, k: int, fmt: dict[str, str]) -> str:
    return " ".join(_sentences(rng, doc, grammar, k, fmt))


def _fact(doc: Document, key: str, question: str, answer: str, sentence: str) -> str:
    doc.facts.append(Fact(key, question, answer, sentence))
    return sentence


def _product_fmt(p: Product) -> dict[str, str]:
    return {"sku": p.sku, "name": p.name, "family": p.family.plural, "prefix": p.family.prefix}


def _pii_paragraph(rng: random.Random, product: Product | None) -> Block:
    """A contact paragraph naming a Halvorsen employee (PII, but not a CRM contact)."""
    employee = rng.choice([e for e in EMPLOYEES if e.role != "account manager"])
    text = SpanText()
    values = {
        "person": Pii(employee.name, "PERSON"),
        "email": Pii(employee.email, "EMAIL_ADDRESS"),
        "phone": Pii(employee.phone, "PHONE_NUMBER"),
        "subject": f"the {product.sku}" if product else "this policy",
        "role": employee.role,
    }
    text.add(rng.choice((
        "For on-site assistance with {subject}, contact our {role} {person} at {email} or {phone}.",
        "Questions about {subject} can be directed to our {role} {person} ({email}, {phone}).",
        "Our {role} {person} can be reached at {phone} or by e-mail at {email} for questions about {subject}.",
    )), **values)
    return Block("p", text.text(), spans=tuple(text.spans))


def _spec_sentence(rng: random.Random, doc: Document, p: Product, key: str) -> str:
    spec = SPEC_DEFS[key]
    f = _product_fmt(p)
    sentence = rng.choice(spec.sentences).format(value=p.specs[key], **f)
    return _fact(doc, f"{p.sku}.{key}", spec.question.format(**f), p.specs[key], sentence)


def _manual(rng: random.Random, p: Product, path: str) -> Document:
    f = _product_fmt(p)
    doc = Document(path, "manual", f"{p.name} Product Manual")
    doc.intro.append(Block("p", f"This manual describes the technical data, operation and maintenance of the {p.name}. "
                                + _filler(rng, doc, "general", 2, f)))
    apps = rng.sample(APPLICATIONS[p.category], 3)
    overview = Section("Overview", expandable=True, grammar="general")
    overview.blocks.append(Block("p", (
        f"The {p.sku} belongs to the Halvorsen {p.family.prefix} series of {p.family.plural}. "
        f"Typical applications are {apps[0]}, {apps[1]} and {apps[2]}. " + _filler(rng, doc, "general", 2, f))))
    specs = Section("Technical specifications")
    keys = CATEGORY_SPECS[p.category] + ("temperature_range", "weight")
    specs.blocks.append(Block("p", " ".join(_spec_sentence(rng, doc, p, k) for k in keys)))
    specs.blocks.append(Block("p", "The key data at a glance:"))
    specs.blocks.append(Block("ul", items=tuple(
        f"{SPEC_DEFS[k].label}: {p.specs[k]}" for k in CATEGORY_SPECS[p.category] + COMMON_SPECS)))
    operation = Section("Operation", expandable=True, grammar="operation")
    operation.blocks.append(Block("p", _filler(rng, doc, "operation", rng.randint(3, 5), f)))
    maint = Section("Maintenance", expandable=True, grammar="maintenance")
    maint.blocks.append(Block("p", f"{_spec_sentence(rng, doc, p, 'maintenance_interval')} "
                                   + _filler(rng, doc, "maintenance", 3, f)))
    maint.blocks.append(Block("p", f"The recommended service kit for the {p.sku} is {p.service_kit}. "
                                   "During each service:"))
    maint.blocks.append(Block("ul", items=("Inspect seals and gaskets for leaks.", "Check all fasteners for tightness.",
                                           "Check the unit for unusual noise and vibration.",
                                           "Record the running hours in the maintenance log.")))
    warranty = Section("Warranty")
    warranty.blocks.append(Block("p", (
        f"{_spec_sentence(rng, doc, p, 'warranty_months')} The warranty covers defects in material and workmanship. "
        "Wear parts and damage caused by operation outside the specification are excluded.")))
    safety = Section("Safety information")
    safety.blocks.append(Block("ul", items=tuple(_sentences(rng, doc, "safety", rng.randint(4, 6), f))))
    doc.sections = [overview, specs, operation, maint, warranty, safety]
    return doc


def _troubleshooting(rng: random.Random, p: Product, path: str) -> Document:
    f = _product_fmt(p)
    doc = Document(path, "troubleshooting", f"Troubleshooting Guide: {p.name}")
    doc.intro.append(Block("p", f"This guide lists common faults of the {p.name}, their most likely causes and how to "
                                "fix them. " + _filler(rng, doc, "troubleshoot", 2, f)))
    before = Section("Before you start", expandable=True, grammar="diagnosis")
    before.blocks.append(Block("ul", items=tuple(_sentences(rng, doc, "safety", 3, f))))
    doc.sections.append(before)
    troubles = TROUBLE[p.category]
    for symptom, cause, fix in rng.sample(troubles, rng.randint(3, len(troubles))):
        slug = _slug(_bare(symptom))
        fix_text = fix.format(kit=p.service_kit)
        section = Section(f"Symptom: {_bare(symptom)}", expandable=True, grammar="diagnosis")
        cause_s = _fact(doc, f"{p.sku}.troubleshooting.{slug}.cause",
                        f"According to the troubleshooting guide, what is the most likely cause of {symptom} "
                        f"on the {p.name}?",
                        cause, f"The most likely cause of {symptom} on the {p.sku} is {cause}.")
        fix_s = _fact(doc, f"{p.sku}.troubleshooting.{slug}.fix",
                      f"According to the troubleshooting guide, how do you fix {symptom} on the {p.name}?",
                      fix_text, f"To fix {symptom} on the {p.sku}, {fix_text}.")
        section.blocks.append(Block("p", f"Cause: {cause_s}"))
        section.blocks.append(Block("p", f"Fix: {fix_s} " + _filler(rng, doc, "troubleshoot", 1, f)))
        doc.sections.append(section)
    doc.sections.append(Section("If the problem persists", blocks=[Block("p", (
        "If none of the measures above solves the problem, stop the unit and contact the Halvorsen service team "
        "through the service portal. " + _filler(rng, doc, "troubleshoot", 2, f)))]))
    return doc


def _installation(rng: random.Random, p: Product, path: str) -> Document:
    f = _product_fmt(p)
    inst = p.install
    target = TORQUE_TARGET[p.category]
    doc = Document(path, "installation_guide", f"Installation Guide: {p.name}")
    doc.intro.append(Block("p", f"This guide explains how to install and commission the {p.name}. "
                                + _filler(rng, doc, "install", 2, f)))
    before = Section("Before installation", expandable=True, grammar="install")
    before.blocks.append(Block("ul", items=tuple(_sentences(rng, doc, "install", 4, f))))
    mounting = Section("Mounting", expandable=True, grammar="installation")
    torque = _fact(doc, f"{p.sku}.install.bolt_torque",
                   f"What tightening torque applies to {target} of the {p.name}?", f"{inst['bolt_torque']} Nm",
                   f"Tighten {target} of the {p.sku} to {inst['bolt_torque']} Nm in a crosswise sequence.")
    clearance = _fact(doc, f"{p.sku}.install.clearance",
                      f"How much free space must be left around the {p.name} for maintenance access?",
                      f"{inst['clearance']} mm",
                      f"Leave at least {inst['clearance']} mm of free space around the {p.sku} for maintenance access.")
    mounting.blocks.append(Block("p", f"{clearance} {_filler(rng, doc, 'install', 2, f)} {torque}"))
    connection = Section("Connection", expandable=True, grammar="installation")
    connection.blocks.append(Block("p", _filler(rng, doc, "install", 3, f)))
    commissioning = Section("Commissioning", expandable=True, grammar="operation")
    run_in = _fact(doc, f"{p.sku}.install.run_in", f"How long is the run-in period of the {p.name} after installation?",
                   f"{inst['run_in']} hours",
                   f"After installation, operate the {p.sku} at reduced load for a run-in period of "
                   f"{inst['run_in']} hours.")
    commissioning.blocks.append(Block("p", f"{run_in} {_filler(rng, doc, 'operation', 2, f)}"))
    first = Section("First inspection")
    first.blocks.append(Block("p", _fact(
        doc, f"{p.sku}.install.first_inspection", f"When is the first inspection of a newly installed {p.name} due?",
        f"after {inst['first_inspection']} operating hours",
        f"The first inspection of a newly installed {p.sku} is due after {inst['first_inspection']} operating hours.")
        + " Check all connections for leaks and retighten the fasteners if necessary."))
    doc.sections = [before, mounting, connection, commissioning, first]
    return doc


# (policy type, region code or "global", region name in running text)
POLICY_TYPES = ("warranty", "returns", "shipping")
POLICY_EDITIONS: tuple[tuple[str, str, str], ...] = tuple(
    (t, "global", "") for t in POLICY_TYPES
) + tuple((t, c.code, c.name) for c in COUNTRIES for t in POLICY_TYPES)


def _policy(rng: random.Random, kind: str, region: str, region_name: str, path: str) -> Document:
    is_global = region == "global"
    title = f"{kind.capitalize()} Policy" + ("" if is_global else f" for {region_name}")
    phrase = f"the general {kind} policy" if is_global else f"the {kind} policy for {region_name}"
    who = "customers" if is_global else f"customers in {region_name}"
    lead = "Unless a country edition of this policy applies, " if is_global else ""

    def sentence(text: str) -> str:
        text = lead + text
        return text[0].upper() + text[1:]

    doc = Document(path, "policy", title)
    doc.intro.append(Block("p", f"This document sets out {phrase} of Halvorsen Industrial Supply GmbH. "
                                + _filler(rng, doc, "policy", 2, {})))
    scope = Section("Scope", expandable=True, grammar="policy")
    scope.blocks.append(Block("p", _filler(rng, doc, "policy", 3, {})))
    key = f"policy.{kind}.{region}"
    main = Section({"warranty": "Warranty claims", "returns": "Returns", "shipping": "Delivery terms"}[kind],
                   expandable=True, grammar="policy")
    procedure: tuple[str, ...]
    if kind == "warranty":
        days, turnaround, ext = rng.choice((14, 30, 60)), rng.randint(5, 15), rng.choice((12, 24, 36))
        facts = [
            _fact(doc, f"{key}.claim_notification_days",
                  f"Within how many days must a defect be reported under {phrase}?", f"{days} days",
                  sentence(f"{who} must report a defect in writing within {days} days of discovering it.")),
            _fact(doc, f"{key}.repair_turnaround_days",
                  f"How many working days does a warranty repair take under {phrase}?",
                  f"{turnaround} working days",
                  sentence(f"warranty repairs for {who} are completed within {turnaround} working days after the unit "
                           "arrives at our service centre.")),
            _fact(doc, f"{key}.extended_warranty_months",
                  f"By how many months can the warranty be extended under {phrase}?", f"{ext} months",
                  sentence(f"{who} can extend the warranty by up to {ext} months beyond the standard period "
                           "when placing the order.")),
        ]
        procedure = ("Report the defect through the service portal.", "Quote the serial number and the order number.",
                     "Describe the fault and the operating conditions.",
                     "Keep the defective part until the claim is settled.")
    elif kind == "returns":
        window_days, fee = rng.choice((14, 30, 45, 60)), rng.choice((10, 15, 20, 25))
        rma_days = rng.choice((10, 14, 21, 30))
        facts = [
            _fact(doc, f"{key}.return_window_days", f"Within how many days can goods be returned under {phrase}?",
                  f"{window_days} days",
                  sentence(f"{who} can return unused goods within {window_days} days of delivery.")),
            _fact(doc, f"{key}.restocking_fee_percent",
                  f"What restocking fee applies to returns of non-defective goods under {phrase}?", f"{fee}%",
                  sentence(f"a restocking fee of {fee}% of the net invoice value applies to returns of non-defective "
                           f"goods by {who}.")),
            _fact(doc, f"{key}.rma_validity_days", f"How long is an RMA number valid under {phrase}?",
                  f"{rma_days} days", sentence(f"an RMA number issued to {who} is valid for {rma_days} days.")),
        ]
        procedure = ("Request an RMA number through the service portal.",
                     "Quote the order number and the article number.",
                     "Pack the goods in their original packaging.",
                     "Mark the RMA number clearly on the outside of the parcel.",
                     "Send the goods to the address given in the RMA confirmation.")
    else:
        threshold, lo, cutoff = rng.choice((250, 500, 750, 1000)), rng.randint(1, 4), rng.choice((11, 12, 13, 14, 15))
        hi = lo + rng.randint(1, 3)
        facts = [
            _fact(doc, f"{key}.free_shipping_threshold_eur", f"From which order value is shipping free under {phrase}?",
                  f"{threshold} EUR",
                  sentence(f"orders by {who} with a net value of at least {threshold} EUR are shipped free "
                           "of charge.")),
            _fact(doc, f"{key}.standard_delivery_days", f"How long does a standard delivery take under {phrase}?",
                  f"{lo} to {hi} working days",
                  sentence(f"standard deliveries to {who} arrive within {lo} to {hi} working days after dispatch.")),
            _fact(doc, f"{key}.express_cutoff",
                  f"What is the order cut-off time for same-day dispatch of express orders under {phrase}?",
                  f"{cutoff}:00 local time",
                  sentence(f"express orders by {who} received before {cutoff}:00 local time are dispatched on the same "
                           "working day.")),
        ]
        procedure = ("Check the delivery for completeness on arrival.", "Note any visible damage on the delivery note.",
                     "Report transport damage through the service portal.",
                     "Keep the packaging until the claim is settled.")
    main.blocks.append(Block("p", f"{facts[0]} {_filler(rng, doc, 'policy', 2, {})} {facts[1]}"))
    main.blocks.append(Block("p", f"{facts[2]} {_filler(rng, doc, 'policy', 1, {})}"))
    steps = Section("Procedure")
    steps.blocks.append(Block("p", "Please follow these steps:"))
    steps.blocks.append(Block("ul", items=procedure))
    doc.sections = [scope, main, steps]
    return doc


def _expand(rng: random.Random, doc: Document, product: Product | None, target_words: int, long: bool) -> None:
    """Grow the document to roughly target_words with filler paragraphs (and appendices for long ones)."""
    f = _product_fmt(product) if product else {}
    if long and product:
        parts = Section("Appendix A: Spare parts overview")
        parts.blocks.append(Block("p", f"The following spare parts are available for the {product.sku}:"))
        parts.blocks.append(Block("ul", items=tuple(
            f"{product.sku}-P{n:03d} {name}" for n, name in enumerate(PART_NAMES, start=1))))
        checklist = Section("Appendix B: Inspection checklist")
        checklist.blocks.append(Block("ul", items=tuple(
            _sentences(rng, doc, "maintenance", 8, f) + _sentences(rng, doc, "safety", 6, f))))
        doc.sections += [parts, checklist]
    if long:
        doc.sections.append(Section("Appendix C: Background information", expandable=True,
                                    grammar="background" if product else "policy"))
    expandable = [s for s in doc.sections if s.expandable]
    if not expandable:
        return
    words = doc.words()
    i = 0
    while words < target_words:
        section = expandable[-1] if long and i % 4 else expandable[i % len(expandable)]
        paragraph = _filler(rng, doc, section.grammar, rng.randint(3, 5), f)
        section.blocks.append(Block("p", paragraph))
        words += paragraph.count(" ") + 1
        i += 1


# ---------------------------------------------------------------- rendering


def _render_markdown(doc: Document) -> tuple[str, list[tuple[int, int, Pii]]]:
    """Markdown source; PII offsets are into this exact text."""
    out = [f"# {doc.title}\n"]
    pos = len(out[0])
    spans: list[tuple[int, int, Pii]] = []
    for block in doc.blocks():
        if block.kind == "h2":
            chunk = f"\n## {block.text}\n"
        elif block.kind == "p":
            base = pos + 1
            spans.extend((base + s, base + e, v) for s, e, v in block.spans)
            chunk = f"\n{block.text}\n"
        else:
            chunk = "\n" + "".join(f"- {item}\n" for item in block.items)
        out.append(chunk)
        pos += len(chunk)
    return "".join(out), spans


HTML_STYLE = """<style>
body { font-family: "Helvetica Neue", Arial, sans-serif; max-width: 52em; margin: 2em auto; color: #222; }
h1 { color: #1f4e79; border-bottom: 2px solid #1f4e79; }
h2 { color: #2e75b6; margin-top: 1.5em; }
ul { padding-left: 1.4em; }
</style>
"""
HTML_SCRIPT = """<script>
window.kbAnalytics = window.kbAnalytics || [];
window.kbAnalytics.push({"event": "article_view", "article": "%s"});
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("h2").forEach(function (h) { h.setAttribute("tabindex", "0"); });
});
</script>
"""


def _render_html(doc: Document, with_assets: bool) -> str:
    esc = lambda s: html.escape(s, quote=False)  # noqa: E731
    out = ['<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n', f"<title>{esc(doc.title)}</title>\n"]
    if with_assets:
        out.append(HTML_STYLE)
    out.append(f"</head>\n<body>\n<main>\n<h1>{esc(doc.title)}</h1>\n")
    for block in doc.blocks():
        if block.kind == "h2":
            out.append(f"<h2>{esc(block.text)}</h2>\n")
        elif block.kind == "p":
            out.append(f"<p>{esc(block.text)}</p>\n")
        else:
            out.append("<ul>\n" + "".join(f"<li>{esc(i)}</li>\n" for i in block.items) + "</ul>\n")
    out.append("</main>\n<footer><p>Halvorsen Industrial Supply GmbH - Knowledge Base</p></footer>\n")
    if with_assets:
        out.append(HTML_SCRIPT % doc.path)
    out.append("</body>\n</html>\n")
    return "".join(out)


def _render_pdf(doc: Document, created: datetime.datetime) -> bytes:
    """A text PDF with a core font (latin-1 only). No header/footer, so extracted text has no page noise."""
    pdf = FPDF(format="A4")
    pdf.set_creation_date(created)
    pdf.set_title(doc.title)
    pdf.set_author(COMPANY)
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    nl = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}
    pdf.set_font("Helvetica", "B", 16)
    pdf.multi_cell(0, 8, doc.title, **nl)
    pdf.ln(2)
    for block in doc.blocks():
        if block.kind == "h2":
            pdf.ln(2)
            pdf.set_font("Helvetica", "B", 13)
            pdf.multi_cell(0, 7, block.text, **nl)
            pdf.ln(1)
        elif block.kind == "p":
            pdf.set_font("Helvetica", "", 10.5)
            pdf.multi_cell(0, 5, block.text, **nl)
            pdf.ln(2)
        else:
            pdf.set_font("Helvetica", "", 10.5)
            for item in block.items:
                pdf.set_x(pdf.l_margin + 4)
                pdf.multi_cell(0, 5, f"- {item}", **nl)
            pdf.ln(2)
    return bytes(pdf.output())


@dataclass(frozen=True)
class DocSpec:
    """What to write at one path; the document itself is built from it when written (keeps memory flat)."""

    path: str
    kind: str
    payload: Any  # a Product, or (policy type, region code, region name)
    ext: str
    long: bool
    with_pii: bool
    html_assets: bool = False


def _plan_document_specs(seed: int, n: int, scale: Scale, catalog: list[Product]) -> list[DocSpec]:
    """Decide path, kind, format, length class and PII for every document; sorted by path."""
    plan = _plan_documents(n)
    rng = _stream(seed, "documents")
    entries: list[tuple[str, Any]] = []  # (kind, payload)
    entries += [("policy", edition) for edition in POLICY_EDITIONS[: plan.policies]]
    entries += [("manual", p) for p in catalog[: plan.manuals]]
    entries += [("troubleshooting", p) for p in catalog[: plan.troubleshooting]]
    entries += [("installation_guide", p) for p in catalog[: plan.installation_guides]]

    count = len(entries)
    order = list(range(count))
    rng.shuffle(order)
    n_pdf = min(count, max(3, round(count * 0.01)))
    n_html = round(count / 3)
    formats = ["md"] * count
    for j, idx in enumerate(order):
        formats[idx] = "pdf" if j < n_pdf else "html" if j < n_pdf + n_html else "md"
    non_pdf = [i for i in range(count) if formats[i] != "pdf"]
    long_docs = set(rng.sample(non_pdf, min(len(non_pdf), max(3, count // 200)))) if scale.long_documents else set()
    md_docs = [i for i in range(count) if formats[i] == "md"]
    pii_docs = set(rng.sample(md_docs, 1)) if md_docs else set()  # at least one with exact offsets
    pii_docs |= set(rng.sample(range(count), min(count, max(2, round(count * 0.03)) - len(pii_docs))))

    specs = []
    for i, (kind, payload) in enumerate(entries):
        if kind == "policy":
            ptype, region, region_name = payload
            suffix = "" if region == "global" else f"-{_slug(region_name.removeprefix('the '))}"
            stem = f"policies/{ptype}-policy{suffix}"
        else:
            slug = _slug(payload.name)
            stem = {"manual": f"manuals/{slug}", "troubleshooting": f"troubleshooting/{slug}-troubleshooting",
                    "installation_guide": f"guides/{slug}-installation-guide"}[kind]
        specs.append(DocSpec(f"{stem}.{formats[i]}", kind, payload, formats[i], i in long_docs, i in pii_docs))
    specs.sort(key=lambda s: s.path)
    # Every other HTML page (in path order) carries a <style> and a <script> block.
    html_seen = 0
    for k, spec in enumerate(specs):
        if spec.ext == "html":
            html_seen += 1
            if html_seen % 2:
                specs[k] = DocSpec(**{**spec.__dict__, "html_assets": True})
    return specs


def _build_document(seed: int, spec: DocSpec) -> Document:
    rng = random.Random(f"agenix-sample:{seed}:doc:{spec.path}")
    product = None if spec.kind == "policy" else spec.payload
    if spec.kind == "policy":
        doc = _policy(rng, *spec.payload, spec.path)
    elif spec.kind == "manual":
        doc = _manual(rng, product, spec.path)
    elif spec.kind == "troubleshooting":
        doc = _troubleshooting(rng, product, spec.path)
    else:
        doc = _installation(rng, product, spec.path)
    if spec.with_pii:
        doc.sections.append(Section("Contact", blocks=[_pii_paragraph(rng, product)]))
    if spec.long:
        target = rng.randint(3000, 8000)
    elif rng.random() < 0.08:
        target = rng.randint(150, 300)
    else:
        target = int(200 * 7.5 ** (rng.random() ** 1.3))
        if spec.kind == "policy":  # policies are short; their filler grammar is small
            target = min(target, 700)
    _expand(rng, doc, product, target, spec.long)
    return doc


def _write_documents(
    folder: Path, specs: list[DocSpec], seed: int, as_of: datetime.date
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Build, render and write every document; returns its PII spans and facts (in path order)."""
    created = datetime.datetime.combine(as_of, datetime.time(), tzinfo=datetime.timezone.utc)
    for sub in ("manuals", "policies", "troubleshooting", "guides"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    pii: list[dict[str, Any]] = []
    facts: list[dict[str, Any]] = []
    for spec in specs:
        doc = _build_document(seed, spec)
        target = folder / spec.path
        if spec.ext == "md":
            text, spans = _render_markdown(doc)
            target.write_text(text, encoding="utf-8", newline="\n")
            for start, end, value in spans:
                pii.append(_pii_record("kb_documents", doc.path, start, end, value))
            for fact in doc.facts:
                if fact.sentence not in text:
                    raise AssertionError(f"fact sentence missing from {doc.path}: {fact.sentence}")
        else:
            if spec.ext == "html":
                target.write_text(_render_html(doc, spec.html_assets), encoding="utf-8", newline="\n")
            else:
                target.write_bytes(_render_pdf(doc, created))
            for block in doc.blocks():
                for _s, _e, value in block.spans:
                    pii.append(_pii_record("kb_documents", doc.path, None, None, value))
        for fact in doc.facts:
            facts.append({"fact_id": f"F-{len(facts) + 1:06d}", "document_id": doc.path, "key": fact.key,
                          "question": fact.question, "answer": fact.answer, "sentence": fact.sentence})
    return pii, facts


# ================================================================ golden set


def golden_set(seed: int, facts: Sequence[dict[str, Any]], catalog_skus: Iterable[str] = ()) -> dict[str, Any]:
    """The support-assistant golden set of this company (format: core/golden.py).

    ``queries``: ``GOLDEN_PER_KIND`` installation guides, manuals and troubleshooting articles drawn with the seed,
    one question each about a fact the document states (every fact key is stated by exactly one document, and its
    question names the product); the retrieval smoke test asks these. Facts come in path order, so the draw is
    deterministic. ``items`` and ``conversations``: see :func:`_golden_items` and :func:`_golden_conversations`;
    ``catalog_skus``: every SKU the company sells, none of which an unanswerable question may pass off as unknown.
    """
    rng = _stream(seed, "golden")
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for fact in facts:
        if fact["document_id"].startswith(GOLDEN_KINDS):
            by_doc.setdefault(fact["document_id"], []).append(fact)
    queries = []
    for kind in GOLDEN_KINDS:
        docs = [d for d in by_doc if d.startswith(kind)]
        for doc in sorted(rng.sample(docs, min(GOLDEN_PER_KIND, len(docs)))):
            fact = rng.choice(by_doc[doc])
            queries.append({"id": f"G-{len(queries) + 1:03d}", "question": fact["question"],
                            "expected_documents": [doc], "answer": fact["answer"]})
    subjects = _golden_subjects(facts)
    return {"use_case": GOLDEN_USE_CASE, "queries": queries,
            "items": _golden_items(seed, subjects, facts, catalog_skus),
            "conversations": _golden_conversations(seed, subjects)}


# Held-out subjects (products, policies): sha1 of the SKU or policy name starts with 8-f, about half of them. Answer
# code may be tuned on the dev subjects; the held-out ones, asked in a customer's words, measure it.
HOLDOUT_DIGITS = "89abcdef"
# Per product: generator-worded items (one from its manual, one from its guide or troubleshooting article), and for a
# held-out product this many customer paraphrases (preferring facts the generator items do not ask).
GOLDEN_GENERATOR_PER_PRODUCT = 2
GOLDEN_PARAPHRASES_PER_PRODUCT = 3
# Products asked about at most, drawn with the seed when the catalog has more (medium, large): an evaluation asks
# every item through the real model, so its size must not grow with the scale.
GOLDEN_MAX_PRODUCTS = 24


def golden_split(subject: str) -> str:
    """``holdout`` or ``dev`` for a product SKU or a policy (``policy.returns``)."""
    return "holdout" if hashlib.sha1(subject.encode("utf-8")).hexdigest()[0] in HOLDOUT_DIGITS else "dev"


@dataclass
class _Subject:
    """A product or a (general) policy and the facts its documents state, in manifest order."""

    key: str  # SKU or "policy.<kind>"
    family: FamilyDef | None
    facts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def split(self) -> str:
        return golden_split(self.key)

    def kind_facts(self, *kinds: str) -> list[dict[str, Any]]:
        return [f for f in self.facts if f["document_id"].startswith(kinds)]


def _golden_subjects(facts: Sequence[dict[str, Any]]) -> list[_Subject]:
    families = {f.prefix: f for f in FAMILIES}
    subjects: dict[str, _Subject] = {}
    for fact in facts:
        key = fact["key"]
        if key.startswith("policy."):
            _, kind, region, _name = key.split(".")
            if region != "global":  # country editions: the paraphrases would have to name the country
                continue
            subject = f"policy.{kind}"
            subjects.setdefault(subject, _Subject(subject, None)).facts.append(fact)
        else:
            sku = key.split(".")[0]
            subjects.setdefault(sku, _Subject(sku, families[sku.rsplit("-", 1)[0]])).facts.append(fact)
    return [subjects[k] for k in sorted(subjects)]


# How customers refer to a product: {sku} alone, lower case, with the family in their words, "our ...".
_PRODUCT_REFS = ("{sku}", "{sku_lower}", "the {sku} {family_lower}", "our {sku}", "a {sku_lower}",
                 "the {family_lower} {sku}")

# Customer paraphrases per fact (the part of the key after the SKU, or the policy fact's name). Written to ask for the
# same fact as the generator's question (SPEC_DEFS, _installation, _troubleshooting, _policy) without its wording.
_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "install.bolt_torque": ("what torque do I tighten the {target} on {ref} to?",
                            "{ref}: how tight do the {target} need to be, in Nm?",
                            "we are mounting {ref} right now - torque value for the {target}?"),
    "install.clearance": ("how much room do I need to keep around {ref} so it can be serviced?",
                          "minimum clearance for {ref}? we're planning the layout",
                          "we just got {ref} - what distance to walls and other equipment does it need for servicing?"),
    "install.run_in": ("how long should {ref} run at reduced load once it's installed?",
                       "break-in time for a freshly installed {sku}?",
                       "we commissioned {ref} today, for how many hours do we keep the load down?"),
    "install.first_inspection": ("we just put in {ref}, after how many running hours do we check it the first time?",
                                 "{ref} - when is the initial check after installation?",
                                 "how soon after installing {ref} should someone look it over?"),
    "max_pressure": ("what's the highest pressure {ref} can handle?", "how many bar can {ref} take at most?",
                     "max working pressure for {ref}?"),
    "flow_rate": ("how much does {ref} pump per minute?", "{ref} flow in l/min?",
                  "what flow do we get out of {ref} at normal speed?"),
    "power": ("how big is the motor on {ref}?", "how many kW is the drive of {ref}?"),
    "nominal_size": ("what DN is {ref}?", "which pipe size does {ref} fit?"),
    "kv_value": ("what's the Kv of {ref}?", "how much flows through {ref} when it's fully open (Kv)?"),
    "free_air_delivery": ("how much air does {ref} deliver?", "{ref} FAD in m³/min?"),
    "ratio": ("what gear ratio does {ref} have?", "{ref}: what's the reduction, like 10:1?"),
    "rated_torque": ("how much torque does {ref} put out at the output shaft?", "{ref} output torque rating?"),
    "input_power": ("what's the biggest motor I can put on {ref}?", "input power limit of {ref} in kW?"),
    "bore_diameter": ("what's the inner diameter of {ref}?", "{ref} bore size?"),
    "dynamic_load": ("what dynamic load can {ref} take, in kN?", "{ref} basic dynamic rating?"),
    "limiting_speed": ("how fast can {ref} spin?", "max rpm for {ref}?"),
    "shaft_diameter": ("what size shaft does {ref} go on?", "{ref} - for which shaft diameter?"),
    "sliding_speed": ("how fast can the shaft surface move in {ref}?", "max sliding velocity {ref}, in m/s?"),
    "measuring_range": ("what range does {ref} measure?", "{ref} - from what to what does it measure?"),
    "accuracy": ("how accurate is {ref}?", "{ref} measurement error, in % of span?"),
    "ip_rating": ("what IP class is {ref}?", "is {ref} dust and water proof - which IP rating?"),
    "load_capacity": ("how much weight can {ref} carry?", "max load on {ref} in kg?"),
    "belt_speed": ("how fast can the belt run on {ref}?", "top belt speed for {ref}?"),
    "diameter": ("how big is {ref} across?", "OD of {ref}?"),
    "temperature_range": ("what temperatures can {ref} be used at?", "{ref} min and max operating temp?",
                          "how cold and how hot can it get around {ref} while it's running?"),
    "weight": ("how heavy is {ref}?", "what does {ref} weigh, net?", "{ref} weight in kg?"),
    "maintenance_interval": ("how many operating hours between services on {ref}?", "service interval for {ref}?",
                             "how often do we have to service {ref}?"),
    "warranty_months": ("how long is {ref} under warranty?", "warranty on {ref} - how many months?",
                        "if {ref} breaks, for how long after delivery is it covered?"),
    "troubleshooting.cause": ("we're seeing {symptom} on {ref} - what usually causes that?",
                              "{ref} has {symptom}. why?", "what's behind {symptom} with {ref}?"),
    "troubleshooting.fix": ("how do I get rid of {symptom} on {ref}?", "{ref} {symptom} - what's the fix?",
                            "{symptom} on {ref} again, what should we do about it?"),
    "return_window_days": ("how many days do I have to send back something we don't need?",
                           "what's your deadline for returning unused parts?"),
    "restocking_fee_percent": ("do you charge anything if I return a part that isn't faulty?",
                               "what percentage do you keep when we send back goods we ordered by mistake?"),
    "rma_validity_days": ("my RMA number - how long before it expires?",
                          "for how many days can I use a return number?"),
    "free_shipping_threshold_eur": ("how much do I have to order to get free delivery?",
                                    "minimum order value for no shipping costs?"),
    "standard_delivery_days": ("how many days does normal shipping take?",
                               "if I order without express, when will it arrive?"),
    "express_cutoff": ("by what time do I need to place an express order so it leaves today?",
                       "latest time for express orders to go out the same day?"),
    "claim_notification_days": ("how soon do I have to tell you about a defect?",
                                "we found a fault in a part - how long do we have to report it?"),
    "repair_turnaround_days": ("how long does a warranty repair usually take?",
                               "once you have our broken unit, when do we get it back repaired?"),
    "extended_warranty_months": ("can I get a longer warranty, and by how much?",
                                 "how many extra months of warranty can we buy when ordering?"),
}

# Questions the knowledge base cannot answer: the right answer is the use case's no-answer text.
# {fake}: a SKU of a family the company sells, with a model number its catalog does not hold and no document names.
_UNANSWERABLE = (
    "What's the list price of {ref}?",
    "How heavy is the {fake} {family_lower}?",
    "What torque do I use on the mounting bolts of the {fake} {family_lower}?",
    "Is {ref} more reliable than the equivalent Nordtek model?",
    "What payment terms do you offer new customers?",
    "How many {family_plural} did you sell last year?",
)


def _fact_name(key: str) -> str:
    """The paraphrase key of a fact key: ``install.run_in``, ``weight``, ``troubleshooting.cause``,
    ``express_cutoff``."""
    if key.startswith("policy."):
        return key.rsplit(".", 1)[1]
    rest = key.split(".", 1)[1]
    return f"troubleshooting.{rest.rsplit('.', 1)[1]}" if rest.startswith("troubleshooting.") else rest


def _ref_values(subject: _Subject, ref: str) -> dict[str, str]:
    assert subject.family is not None
    family_lower = subject.family.name.split(",")[0].lower()
    values = {"sku": subject.key, "sku_lower": subject.key.lower(), "family_lower": family_lower,
              "family_plural": subject.family.plural, "target": TORQUE_TARGET[subject.family.category][4:]}
    return {**values, "ref": ref.format(**values)}


def _paraphrase(rng: random.Random, subject: _Subject, fact: dict[str, Any]) -> str:
    templates = _PARAPHRASES[_fact_name(fact["key"])]
    values: dict[str, str] = {}
    if subject.family is not None:
        values = _ref_values(subject, rng.choice(_PRODUCT_REFS))
    if ".troubleshooting." in fact["key"]:
        values["symptom"] = fact["key"].split(".")[2].replace("-", " ")
    text = rng.choice(templates).format(**values)
    # Half start with a capital, as typed; a SKU keeps the case the reference gave it.
    if rng.random() < 0.5 and not text.lower().startswith(subject.key.lower()):
        text = text[0].upper() + text[1:]
    return text


def _item(items: list[dict[str, Any]], prefix: str, question: str, fact: dict[str, Any] | None, split: str,
          phrasing: str) -> None:
    item: dict[str, Any] = {"id": f"{prefix}-{sum(i['id'].startswith(prefix) for i in items) + 1:03d}",
                            "question": question}
    if fact is None:
        item.update(answerable=False, split=split)
    else:
        item.update(expected_facts=[fact["answer"]], expected_documents=[fact["document_id"]], split=split,
                    phrasing=phrasing, fact_key=fact["key"])
    items.append(item)


def _golden_items(seed: int, subjects: Sequence[_Subject], facts: Sequence[dict[str, Any]],
                  catalog_skus: Iterable[str] = ()) -> list[dict[str, Any]]:
    """QA items: per product ``GOLDEN_GENERATOR_PER_PRODUCT`` facts asked with the generator's question and, for a
    held-out product, ``GOLDEN_PARAPHRASES_PER_PRODUCT`` asked as a customer would; per general policy one fact, and
    a paraphrase when it is held out; and the questions of ``_UNANSWERABLE``. Deterministic per seed."""
    rng = _stream(seed, "golden-items")
    products = [s for s in subjects if s.family is not None]
    if len(products) > GOLDEN_MAX_PRODUCTS:
        drawn = {s.key for s in rng.sample(products, GOLDEN_MAX_PRODUCTS)}
        subjects = [s for s in subjects if s.family is None or s.key in drawn]
    items: list[dict[str, Any]] = []
    for subject in subjects:
        if subject.family is None:
            asked = [rng.choice(subject.facts)]
        else:
            groups = [subject.kind_facts("manuals/"), subject.kind_facts("guides/", "troubleshooting/")]
            asked = [rng.choice(g) for g in groups if g][:GOLDEN_GENERATOR_PER_PRODUCT]
        for fact in asked:
            _item(items, "Q", fact["question"], fact, subject.split, "generator")
        if subject.split != "holdout":
            continue
        if subject.family is None:
            rest = [f for f in subject.facts if f not in asked] or subject.facts
            paraphrased = [rng.choice(rest)]
        else:
            paraphrased = []
            for kinds in (("guides/",), ("manuals/",), ("troubleshooting/",), ("manuals/",)):
                pool = [f for f in subject.kind_facts(*kinds) if f not in asked and f not in paraphrased]
                if pool and len(paraphrased) < GOLDEN_PARAPHRASES_PER_PRODUCT:
                    paraphrased.append(rng.choice(pool))
        for fact in paraphrased:
            _item(items, "P", _paraphrase(rng, subject, fact), fact, subject.split, "paraphrase")

    products = [s for s in subjects if s.family is not None]
    mentioned = " ".join([f["sentence"] + " " + f["key"] for f in facts] + list(catalog_skus))
    for template in _UNANSWERABLE:
        subject = rng.choice(products)
        values = _ref_values(subject, rng.choice(_PRODUCT_REFS))
        prefix = subject.family.prefix if subject.family else ""
        while True:  # a model number of this family that the catalog does not hold and no document names
            fake = f"{prefix}-{rng.choice(MODEL_NUMBERS)}"
            if not re.search(rf"(?<![\w-]){re.escape(fake)}(?!\d)", mentioned):
                break
        question = template.format(fake=fake, **values)
        _item(items, "U", question[0].upper() + question[1:], None, "dev", "generator")
    return items


def _golden_conversations(seed: int, subjects: Sequence[_Subject]) -> list[dict[str, Any]]:
    """Multi-turn conversations whose later turns only make sense with the earlier ones ("its run-in period"):
    a follow-up about an installation fact, a follow-up about a manual fact that must not borrow another product's
    figure, a warranty question followed by one the knowledge base cannot answer (price), and a troubleshooting
    dialogue whose answers must come from the product's troubleshooting guide."""
    rng = _stream(seed, "golden-conversations")
    products = [s for s in subjects if s.family is not None]

    def fact(subject: _Subject, suffix: str) -> dict[str, Any] | None:
        return next((f for f in subject.facts if f["key"] == f"{subject.key}.{suffix}"), None)

    conversations: list[dict[str, Any]] = []

    def add(subject: _Subject, description: str, turns: list[dict[str, Any]]) -> None:
        conversations.append({"id": f"C-{len(conversations) + 1:02d}", "split": subject.split,
                              "description": description, "turns": turns})

    installed = [s for s in products if fact(s, "install.run_in")]
    if installed:
        s = rng.choice(installed)
        run_in = fact(s, "install.run_in")
        assert run_in is not None
        add(s, "follow-up about an installation fact", [
            {"user": f"I installed a {s.key}."},
            {"user": "How long is its run-in period?",
             "expect": {"must_include": [run_in["answer"]], "must_cite": [run_in["document_id"]]}},
        ])
    weighed = [s for s in products if fact(s, "weight")]
    if len(weighed) >= 2:
        s = rng.choice(weighed)
        assert s.family is not None
        others = [o for o in weighed if o.family is not None and o.family.category != s.family.category]
        other = rng.choice(others)
        weight, other_weight = fact(s, "weight"), fact(other, "weight")
        assert weight is not None and other_weight is not None
        expect: dict[str, Any] = {"must_include": [weight["answer"]]}
        if other_weight["answer"] != weight["answer"]:
            expect["must_not_include"] = [other_weight["answer"]]
        family = s.family.name.split(",")[0].lower()
        add(s, "follow-up naming the product by its kind only, after two products were named", [
            {"user": f"We run a {other.key} and a {s.key} {family} in our plant."},
            {"user": f"How heavy is the {family}?", "expect": expect},
        ])
    warranted = [s for s in products if fact(s, "warranty_months")]
    if warranted:
        s = rng.choice(warranted)
        warranty = fact(s, "warranty_months")
        assert warranty is not None
        add(s, "an answerable question, then one the knowledge base cannot answer", [
            {"user": f"What warranty do we get on the {s.key}?", "expect": {"must_include": [warranty["answer"]]}},
            {"user": "And what does it cost?", "expect": {"must_refuse": True}},
        ])
    troubled = [s for s in products if s.kind_facts("troubleshooting/")]
    if troubled:
        s = rng.choice(troubled)
        cause = rng.choice([f for f in s.kind_facts("troubleshooting/") if f["key"].endswith(".cause")])
        fix = next(f for f in s.facts if f["key"] == cause["key"].removesuffix(".cause") + ".fix")
        symptom = cause["key"].split(".")[2].replace("-", " ")
        add(s, "troubleshooting dialogue answered from the product's troubleshooting guide", [
            {"user": f"Our {s.key} has {symptom} since yesterday."},
            {"user": "What is the most likely cause?",
             "expect": {"must_include": [cause["answer"]], "must_cite": [cause["document_id"]]}},
            {"user": "How do we fix that?",
             "expect": {"must_include": [fix["answer"]], "must_cite": [fix["document_id"]]}},
        ])
    return conversations


def _write_golden_set(path: Path, golden: dict[str, Any], seed: int, scale: str) -> None:
    header = (f"# Generated by `agenix sample-data` (seed {seed}, scale {scale}) from _manifest/facts.jsonl: the\n"
              "# golden set of the sample company (format: agenix_assets/core/golden.py). Its queries are asked by\n"
              "# the retrieval smoke test instead of config/golden/ while it is in the landing zone; its items and\n"
              "# conversations by the evaluation of a release. Rewritten with the data; do not edit.\n")
    body = yaml.safe_dump(golden, sort_keys=False, allow_unicode=True, width=1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body, encoding="utf-8", newline="\n")


# ================================================================ entry point


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8", newline="\n")


def generate_sample_company(
    landing: Path, scale: str = "small", seed: int = 7, as_of: datetime.date | None = None
) -> dict[str, Any]:
    """Write the Halvorsen sample company into ``landing`` and return the summary.

    Removes and rewrites crm/, tickets/, erp/, documents/ and _manifest/ under ``landing``; nothing else
    there is touched. The same (scale, seed, as_of) always produces identical file contents. The returned
    dict equals ``_manifest/sample.json`` plus the absolute ``landing`` path.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    spec = SCALES[scale]
    as_of = as_of or datetime.date.today()
    if isinstance(as_of, datetime.datetime):
        as_of = as_of.date()
    landing = Path(landing)
    end = datetime.datetime.combine(as_of, datetime.time())
    window = Window(end - datetime.timedelta(days=HISTORY_DAYS), end)

    for name in GENERATED_DIRS:
        shutil.rmtree(landing / name, ignore_errors=True)
    landing.mkdir(parents=True, exist_ok=True)

    plan = _plan_documents(spec.documents)
    catalog = build_catalog(seed, plan.catalog_size)
    accounts = _generate_accounts(_stream(seed, "accounts"), spec.accounts, window)
    contacts = _generate_contacts(_stream(seed, "contacts"), spec.contacts, accounts, window)
    _write_crm(landing / "crm" / "crm.sqlite", accounts, contacts)

    orders = _generate_orders(_stream(seed, "orders"), spec.orders, accounts, catalog, window)
    _write_orders(landing / "erp" / "orders.csv", orders)
    orders_by_account: dict[str, tuple[list[str], list[str]]] = {}  # account -> (order dates, order ids)
    for row in orders:  # already in date order
        dates, ids = orders_by_account.setdefault(row[1], ([], []))
        dates.append(row[2])
        ids.append(row[0])

    tickets, ticket_pii = _generate_tickets(
        _stream(seed, "tickets"), spec.tickets, contacts, catalog, orders_by_account, window
    )
    ticket_files = _write_tickets(landing / "tickets", tickets)

    documents = _plan_document_specs(seed, spec.documents, spec, catalog)
    doc_pii, facts = _write_documents(landing / "documents", documents, seed, as_of)

    manifest = landing / "_manifest"
    manifest.mkdir(parents=True, exist_ok=True)
    _write_jsonl(manifest / "pii.jsonl", ticket_pii + doc_pii)
    _write_jsonl(manifest / "facts.jsonl", facts)
    golden = golden_set(seed, facts, [p.sku for p in catalog])
    golden_path = sample_golden_set_path(landing, GOLDEN_USE_CASE)
    _write_golden_set(golden_path, golden, seed, scale)

    kinds: dict[str, int] = {}
    formats = {"md": 0, "html": 0, "pdf": 0}
    for doc_spec in documents:
        kinds[doc_spec.kind] = kinds.get(doc_spec.kind, 0) + 1
        formats[doc_spec.ext] += 1
    summary: dict[str, Any] = {
        "company": COMPANY,
        "scale": scale,
        "seed": seed,
        "as_of": as_of.isoformat(),
        "counts": {
            "accounts": len(accounts),
            "contacts": len(contacts),
            "tickets": len(tickets),
            "ticket_files": ticket_files,
            "orders": len(orders),
            "documents": len(documents),
            "documents_by_format": formats,
            "documents_by_kind": dict(sorted(kinds.items())),
            "products": len(catalog),
            "pii_spans": {"support_tickets": len(ticket_pii), "kb_documents": len(doc_pii)},
            "facts": len(facts),
            "golden_queries": len(golden["queries"]),
            "golden_items": len(golden["items"]),
            "golden_conversations": len(golden["conversations"]),
        },
        "paths": {
            "crm": "crm/crm.sqlite",
            "tickets": "tickets",
            "orders": "erp/orders.csv",
            "documents": "documents",
            "pii_manifest": "_manifest/pii.jsonl",
            "facts_manifest": "_manifest/facts.jsonl",
            "golden_set": golden_path.relative_to(landing).as_posix(),
            "summary": "_manifest/sample.json",
        },
    }
    summary_text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    (manifest / "sample.json").write_text(summary_text, encoding="utf-8", newline="\n")
    return {**summary, "landing": str(landing.resolve())}
