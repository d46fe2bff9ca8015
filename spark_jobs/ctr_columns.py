"""The CTR job's shared names: the columns both engines read (ctr_audiences.py with Spark MLlib,
ctr_inprocess.py with scikit-learn), the model's features both build from them, and the log-loss clip."""

USER_COL = "user_id"
CAMPAIGN_COL = "campaign_id"
DATE_COL = "impression_date"
CLICK_COL = "clicked"
P_CLICK_COL = "p_click"
HOUR_COL = "impression_hour"
CATEGORICAL_COLS = ("placement", "channel", HOUR_COL)  # one-hot in the model
RAW_NUMERIC_COLS = ("affinity", "recency_days", "frequency", "monetary", "category_recency_days")  # standardised
LOG_SCALED_COLS = ("frequency", "monetary", "category_recency_days")  # heavy-tailed: log1p before standardising
CROSSED_COLS = ("placement", "channel")  # their one-hot slots times the raw affinity
# hashed one-hot keys: a per-user bias, a campaign x category bias, and the user's own taste for the category
HASHED_KEYS = ("user_key", "campaign_category_key", "user_category_key")
LOG_LOSS_EPSILON = 1e-15  # probabilities are clipped to [eps, 1 - eps] for the log loss
