/* Strict RFC 3339 UTC parsing and formatting without locale or TZ state:
 * days-from-civil arithmetic, so no timegm() and no global timezone. */
#include "upkeep/timefmt.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's method). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

static bool digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return true;
}

static unsigned days_in_month(unsigned y, unsigned m)
{
    static const unsigned dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return dim[m - 1];
}

upk_err upk_time_parse(const char *s, int64_t *out)
{
    if (s == NULL || out == NULL)
        return UPK_E_FIELD_RANGE;
    size_t len = strnlen(s, UPK_TIME_STR_LEN + 1);
    unsigned y, mo, d, h = 0, mi = 0, se = 0;
    if (len != 10 && len != UPK_TIME_STR_LEN)
        return UPK_E_FIELD_RANGE;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return UPK_E_FIELD_RANGE;
    if (len == UPK_TIME_STR_LEN) {
        if (s[10] != 'T' || !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) ||
            s[16] != ':' || !digits(s + 17, 2, &se) || s[19] != 'Z')
            return UPK_E_FIELD_RANGE;
    }
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 ||
        se > 59)
        return UPK_E_FIELD_RANGE;
    *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    return UPK_OK;
}

upk_err upk_time_format(int64_t t, char *buf, size_t cap)
{
    if (buf == NULL || cap < UPK_TIME_STR_LEN + 1)
        return UPK_E_BUFFER_TOO_SMALL;
    if (t < 0 || t > 253402300799) /* 9999-12-31T23:59:59Z */
        return UPK_E_FIELD_RANGE;
    int64_t days = t / 86400, rem = t % 86400, y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    int n = snprintf(buf, cap, "%04d-%02u-%02uT%02d:%02d:%02dZ", (int)y, m, d, (int)(rem / 3600),
                     (int)(rem % 3600 / 60), (int)(rem % 60));
    if (n != UPK_TIME_STR_LEN)
        return UPK_E_INTERNAL;
    return UPK_OK;
}
