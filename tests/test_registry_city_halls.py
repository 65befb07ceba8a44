"""The embedded registry answers by location at each bounded jurisdiction's own city hall.

Each case is the building where the jurisdiction sits, at its published position (Wikipedia and
OpenStreetMap coordinates of the building at that address, rounded to 4 decimals, about 10 m).
A state-wide or country-wide service is asked at a seat of government inside it. Every point must
answer that jurisdiction from the embedded registry alone, and lie well inside its boundary (more
than the 20 m the city limits were simplified by), so the answer is not an artefact of the
simplification.
"""

from __future__ import annotations

import pytest
import shapely
from shapely.geometry import Point

from common.models import Jurisdiction
from resolver.core.decide import Resolver
from resolver.registry.documents import load_embedded_registry

#: (jurisdiction, lat, long, building, address)
CITY_HALLS = [
    ("albuquerque-nm", 35.0867, -106.6504, "Albuquerque Government Center", "One Civic Plaza NW"),
    ("annaberg-buchholz-de", 50.5795, 13.0037, "Rathaus", "Markt 1"),
    ("austin-tx", 30.2650, -97.7470, "Austin City Hall", "301 W 2nd St"),
    ("baltimore-md", 39.2908, -76.6106, "Baltimore City Hall", "100 N Holliday St"),
    ("bloomington-in", 39.1700, -86.5355, "Showers Building (City Hall)", "401 N Morton St"),
    ("bonn-de", 50.7357, 7.1022, "Altes Rathaus", "Markt 2"),
    ("boston-ma", 42.3603, -71.0580, "Boston City Hall", "1 City Hall Square"),
    ("bruhl-de", 50.8291, 6.9045, "Rathaus", "Uhlstraße 3"),
    ("burlingame-ca", 37.5790, -122.3479, "Burlingame City Hall", "501 Primrose Rd"),
    ("burlington-vt", 44.4766, -73.2124, "Burlington City Hall", "149 Church St"),
    ("canton-oh", 40.7975, -81.3747, "Canton City Hall", "218 Cleveland Ave SW"),
    ("chicago-il", 41.8838, -87.6321, "Chicago City Hall", "121 N LaSalle St"),
    ("chula-vista-ca", 32.6401, -117.0838, "Chula Vista City Hall", "276 Fourth Ave"),
    ("college-station-tx", 30.6253, -96.3356, "College Station City Hall", "1101 Texas Ave"),
    ("columbus-in", 39.2014, -85.9214, "Columbus City Hall", "123 Washington St"),
    ("coral-gables-fl", 25.7490, -80.2606, "Coral Gables City Hall", "405 Biltmore Way"),
    ("corona-ca", 33.8757, -117.5663, "Corona City Hall", "400 S Vicentia Ave"),
    ("dunwoody-ga", 33.9224, -84.3418, "Dunwoody City Hall", "4800 Ashford Dunwoody Rd"),
    ("fayetteville-nc", 35.0527, -78.8836, "Fayetteville City Hall", "433 Hay St"),
    ("fiksgatami-no", 59.9119, 10.7336, "Oslo City Hall (Oslo rådhus)", "Rådhusplassen 1"),
    ("fixmystreet-uk", 51.4995, -0.1248, "Palace of Westminster", "London SW1A 0AA"),
    ("giessen-de", 50.5840, 8.6784, "Rathaus", "Berliner Platz 1"),
    ("gilbert-az", 33.3528, -111.7890, "Gilbert Municipal Center", "50 E Civic Center Dr"),
    ("grand-rapids-mi", 42.9679, -85.6716, "Grand Rapids City Hall", "300 Monroe Ave NW"),
    ("greifswald-de", 54.0962, 13.3778, "Rathaus", "Markt"),
    ("hammond-in", 41.6164, -87.5106, "Hammond City Hall", "5925 Calumet Ave"),
    ("huntsville-al", 34.7297, -86.5857, "Huntsville City Hall", "308 Fountain Circle"),
    ("koln-de", 50.9381, 6.9590, "Historisches Rathaus", "Rathausplatz 2"),
    ("krefeld-de", 51.3326, 6.5644, "Rathaus", "Von-der-Leyen-Platz 1"),
    ("lake-elsinore-ca", 33.6688, -117.3279, "Lake Elsinore City Hall", "130 S Main St"),
    ("macon-ga", 32.8365, -83.6319, "Macon City Hall", "700 Poplar St"),
    ("mason-city-ia", 43.1537, -93.2010, "Mason City City Hall", "10 1st St NW"),
    (
        "mecklenburg-vorpommern-de",
        54.3153,
        13.0903,
        "Rathaus Stralsund (a city of the state the registry has no entry for)",
        "Alter Markt",
    ),
    ("milton-ga", 34.0907, -84.3442, "Milton City Hall", "2006 Heritage Walk"),
    ("minneapolis-mn", 44.9772, -93.2654, "Minneapolis City Hall", "350 S 5th St"),
    ("munchen-de", 48.1374, 11.5755, "Neues Rathaus", "Marienplatz 8"),
    ("new-haven-ct", 41.3070, -72.9252, "New Haven City Hall", "165 Church St"),
    ("newark-oh", 40.0581, -82.4013, "Newark City Hall", "40 W Main St"),
    ("newport-news-va", 36.9787, -76.4316, "Newport News City Hall", "2400 Washington Ave"),
    ("northfield-nj", 39.3703, -74.5537, "Northfield City Hall", "1600 Shore Rd"),
    ("oakland-ca", 37.8053, -122.2725, "Oakland City Hall", "1 Frank H. Ogawa Plaza"),
    ("paderborn-de", 51.7185, 8.7536, "Rathaus", "Rathausplatz 1"),
    ("palm-springs-ca", 33.8238, -116.5106, "Palm Springs City Hall", "3200 E Tahquitz Canyon Way"),
    ("peoria-il", 40.6931, -89.5920, "Peoria City Hall", "419 Fulton St"),
    ("philadelphia-pa", 39.9524, -75.1636, "Philadelphia City Hall", "1400 John F Kennedy Blvd"),
    ("raleigh-nc", 35.7780, -78.6430, "Raleigh Municipal Building", "222 W Hargett St"),
    ("ridgway-pa", 41.4203, -78.7286, "Ridgway Borough Office", "108 Main St"),
    ("rostock-de", 54.0887, 12.1405, "Rathaus", "Neuer Markt 1"),
    ("saint-petersburg-fl", 27.7731, -82.6374, "St. Petersburg City Hall", "175 5th St N"),
    ("san-diego-ca", 32.7167, -117.1625, "San Diego City Administration Building", "202 C St"),
    (
        "san-francisco-ca",
        37.7793,
        -122.4193,
        "San Francisco City Hall",
        "1 Dr Carlton B Goodlett Pl",
    ),
    ("schwerin-de", 53.6286, 11.4140, "Rathaus", "Am Markt 14"),
    ("shoreline-wa", 47.7563, -122.3421, "Shoreline City Hall", "17500 Midvale Ave N"),
    ("siegburg-de", 50.7965, 7.2058, "Rathaus", "Nogenter Platz 10"),
    ("st-louis-mo", 38.6272, -90.1997, "St. Louis City Hall", "1200 Market St"),
    ("tucson-az", 32.2230, -110.9743, "Tucson City Hall", "255 W Alameda St"),
    ("union-city-ga", 33.5871, -84.5424, "Union City City Hall", "5047 Union St"),
    ("walnut-creek-ca", 37.9069, -122.0650, "Walnut Creek City Hall", "1666 N Main St"),
    ("washington-dc", 38.8951, -77.0315, "John A. Wilson Building", "1350 Pennsylvania Ave NW"),
]

#: More than the 20 m simplification tolerance, in degrees (0.0003 degrees is at least 17 m of
#: longitude at 55 degrees north and 33 m of latitude).
MARGIN_DEGREES = 0.0003


@pytest.fixture(scope="module")
def resolver() -> Resolver:
    return Resolver(load_embedded_registry())


def test_at_least_forty_jurisdictions_answer_by_location(resolver: Resolver) -> None:
    bounded = {j.id for j in resolver.jurisdictions if j.boundary is not None}
    assert len(bounded) >= 40
    # every bounded entry has its city hall case
    assert bounded == {case[0] for case in CITY_HALLS}


@pytest.mark.parametrize(
    ("jurisdiction", "lat", "long", "building", "address"),
    CITY_HALLS,
    ids=[case[0] for case in CITY_HALLS],
)
def test_city_hall_answers_its_jurisdiction(
    resolver: Resolver, jurisdiction: str, lat: float, long: float, building: str, address: str
) -> None:
    answer = resolver.resolve(lat, long).to_dict()
    assert answer["jurisdiction"]["id"] == jurisdiction, (building, address)
    mine: Jurisdiction = resolver.jurisdiction(jurisdiction)
    if all(e.deprecated for e in mine.endpoints):
        # found by location, and honest that its only listed endpoint is deprecated
        assert (answer["found"], answer["reason"]) == (False, "no_endpoint")
    else:
        assert answer["found"] is True, (building, address)
        assert answer["endpoint"]["url"] in {e.url for e in mine.endpoints}
    assert mine.boundary is not None
    distance = shapely.distance(mine.boundary.boundary, Point(long, lat))
    assert distance > MARGIN_DEGREES, (building, distance)
